/**
 * The Redis store against a private server that the test restarts and whose script cache it flushes
 * (never the shared server): the script is sent whole again when the server lost it, and a connection
 * that is gone fails reservations with the store's typed, transient error instead of holding them.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Failure } from "@bulwark/core"
import { Effect, Schedule } from "effect"
import { Redis } from "ioredis"
import * as PrivateRedis from "../../transport-redis/test/support/PrivateRedis.js"
import { type Rule, RateLimiterStore } from "../src/RateLimiterStore.js"
import * as RedisStore from "../src/RateLimiterStore/Redis.js"

let server: PrivateRedis.PrivateRedis
beforeAll(async () => {
  server = await PrivateRedis.start()
}, 60_000)
afterAll(() => server?.destroy())

// EVAL calls the server has answered: one more means the store sent its script whole.
const evalCalls = async (admin: Redis) => {
  const stats = await admin.info("commandstats")
  return Number(/cmdstat_eval:calls=(\d+)/.exec(stats)?.[1] ?? 0)
}

describe("Redis store faults", () => {
  it.live("sends its script again after SCRIPT FLUSH and after a restart; a stalled server and a lost connection are typed transient errors", () =>
    Effect.gen(function*() {
      const admin = new Redis(server.url, { lazyConnect: true, retryStrategy: () => 100 })
      admin.on("error", () => undefined)
      yield* Effect.addFinalizer(() => Effect.sync(() => admin.disconnect()))
      const store = yield* RateLimiterStore
      const rule: Rule = { kind: "slidingWindow", limit: 1_000, windowMillis: 60_000 }
      const reserve = store.reserve("k", rule, 1, 0)

      expect((yield* reserve).granted).toBe(true)
      const before = yield* Effect.promise(() => evalCalls(admin))
      expect((yield* reserve).granted).toBe(true)
      // Cached: the second reservation went by digest.
      expect(yield* Effect.promise(() => evalCalls(admin))).toBe(before)

      yield* Effect.promise(() => admin.script("FLUSH"))
      expect((yield* reserve).granted).toBe(true)
      expect(yield* Effect.promise(() => evalCalls(admin))).toBe(before + 1)
      expect((yield* reserve).granted).toBe(true)
      expect(yield* Effect.promise(() => evalCalls(admin))).toBe(before + 1)

      // A server that stops answering (every client paused for 1.5 s): the reservation fails after the
      // store's timeout (1 s) with the typed error, and the next one goes through once the server answers.
      yield* Effect.promise(() => admin.call("CLIENT", "PAUSE", "1500", "ALL"))
      const stalled = yield* Effect.flip(reserve)
      expect(stalled._tag).toBe("RateLimiterStoreError")
      expect(String(stalled.cause)).toMatch(/no reply from Redis within 1000 ms/)
      expect((yield* reserve).granted).toBe(true)

      // The server dies: the reservation fails within the command timeout with the typed error.
      yield* Effect.promise(() => server.stop("SIGKILL"))
      const error = yield* Effect.flip(reserve)
      expect(error._tag).toBe("RateLimiterStoreError")
      expect(error.operation).toBe("reserve")
      expect(yield* Failure.classify(error)).toMatchObject({ classification: "transient", category: "dependency" })
      const released = yield* Effect.flip(store.release("k", rule, 1, 0))
      expect(released._tag).toBe("RateLimiterStoreError")

      // Back again (its log replayed, its script cache empty): reservations succeed once it reconnects.
      yield* Effect.promise(() => server.start())
      const again = yield* reserve.pipe(Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.intersect(Schedule.recurs(100)))))
      expect(again.granted).toBe(true)
      // The grants made before the crash are still counted: the log survived the restart.
      const granted = yield* store.reserve("k", { kind: "slidingWindow", limit: 5, windowMillis: 60_000 }, 1, 0)
      expect(granted.granted).toBe(false)
    }).pipe(Effect.provide(RedisStore.layer({ url: server.url }, { prefix: "fault:" })), Effect.scoped), 60_000)
})
