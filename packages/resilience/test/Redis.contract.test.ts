import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Redis } from "ioredis"
import * as RateLimiter from "../src/RateLimiter.js"
import * as RedisStore from "../src/RateLimiterStore/Redis.js"
import { suite } from "./contract.js"
import { fourProcesses } from "./shared.js"

// Each run writes under its own prefix and deletes it afterwards.
const prefix = `bulwark-test:rate-limit:${process.pid}-${Date.now()}:`
const url = process.env.BULWARK_TEST_REDIS_URL ?? "redis://127.0.0.1:6379"

suite("redis", RedisStore.layer({ url }, { prefix }))

describe("Redis store", () => {
  it("four processes share one limit: never above it in any window, within 5 % of it", async () => {
    await fourProcesses({ driver: "redis", url, namespace: prefix, name: `shared-${Date.now()}`, limit: 10, windowMillis: 100, fibers: 20 })
  }, 60_000)

  it.live("an unreachable Redis is a typed error, not a hang or a throw", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        RateLimiter.make("x", { limit: { kind: "slidingWindow", limit: 1, window: "1 second" } }).pipe(
          Effect.provide(RedisStore.layer({ host: "127.0.0.1", port: 1, maxRetriesPerRequest: 0, retryStrategy: () => null }))
        )
      )
      expect(error).toMatchObject({ _tag: "RateLimiterStoreError", operation: "connect" })
    }))
})

afterAll(async () => {
  const client = new Redis(url)
  const keys = await client.keys(`${prefix}*`)
  if (keys.length > 0) await client.del(...keys)
  await client.quit()
})
