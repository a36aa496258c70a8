import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Redis } from "ioredis"
import * as Breaker from "../src/Breaker.js"
import * as RedisStore from "../src/BreakerStateStore/Redis.js"
import { suite } from "./StoreContract.js"

// Each run writes under its own prefix and deletes it afterwards.
const prefix = `bulwark-test:breaker:${process.pid}-${Date.now()}:`
const connection = { host: "127.0.0.1", port: 6379 }

suite("redis", RedisStore.layer(connection, { prefix }))

describe("Redis store", () => {
  it.live("state survives the instance: a new process (connection) sees an open breaker", () =>
    Effect.gen(function*() {
      const options: Breaker.Options = { window: { kind: "consecutive", threshold: 1 }, openDuration: "1 minute" }
      const key = `survives-${Date.now()}`
      yield* Effect.flatMap(Breaker.makeShared(key, options), (first) => Effect.either(first.execute(Effect.fail(new Error("down"))))).pipe(
        Effect.provide(RedisStore.layer(connection, { prefix }))
      )
      const state = yield* Effect.flatMap(Breaker.makeShared(key, options), (second) => second.state).pipe(
        Effect.provide(RedisStore.layer(connection, { prefix }))
      )
      expect(state).toBe("open")
    }))

  it.live("an unreachable Redis is a typed StoreError, not a hang or a throw", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Breaker.makeShared("x").pipe(
          Effect.provide(RedisStore.layer({ host: "127.0.0.1", port: 1, maxRetriesPerRequest: 0, retryStrategy: () => null }))
        )
      )
      expect(error).toMatchObject({ _tag: "StoreError", operation: "connect" })
    }))
})

afterAll(async () => {
  const client = new Redis(connection)
  const keys = await client.keys(`${prefix}*`)
  if (keys.length > 0) await client.del(...keys)
  await client.quit()
})
