import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { Decision, Rule } from "../src/RateLimiterStore.js"
import { RateLimiterStore } from "../src/RateLimiterStore.js"
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

  it.live("a token bucket reads the server's clock from its key's expiry, which every write keeps at the grid of its value", () =>
    Effect.gen(function*() {
      const admin = new Redis(url)
      yield* Effect.addFinalizer(() => Effect.promise(() => admin.quit()))
      const serverMillis = Effect.promise(async () => {
        const [seconds, micros] = await admin.time()
        return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
      })
      // The expiry the scripts keep: the end of the second after the one the value falls in.
      const expiryKept = (key: string) =>
        Effect.promise(async () => {
          const [value, expiry] = await Promise.all([admin.get(prefix + key), admin.call("PEXPIRETIME", prefix + key)])
          expect(expiry).toBe((Math.floor(Number(value) / 1000) + 2) * 1000)
          return Number(value)
        })
      const store = yield* RateLimiterStore
      const key = `clock-${Date.now()}`
      const rule: Rule = { kind: "tokenBucket", capacity: 1_000, intervalMillis: 0.25 }
      const atOnce = (d: Decision) => {
        expect(d).toMatchObject({ granted: true, waitMillis: 0 })
        return (d as Extract<Decision, { granted: true }>).at
      }
      // The first reservation reads TIME (no key yet), the next ones the key's expiry: both agree with TIME.
      for (let i = 0; i < 5; i++) {
        const before = yield* serverMillis
        const at = atOnce(yield* store.reserve(key, rule, 1, 0))
        const after = yield* serverMillis
        expect(at).toBeGreaterThanOrEqual(before)
        expect(at).toBeLessThanOrEqual(after)
        yield* expiryKept(key)
      }
      // Several permits move `tat` by as many intervals; a release of the latest reservation takes them
      // back, and each write keeps the expiry at the grid of the new value.
      const bucket = `${key}-permits`
      const slow: Rule = { kind: "tokenBucket", capacity: 4, intervalMillis: 100 }
      const now = atOnce(yield* store.reserve(bucket, slow, 4, 0))
      const tat = yield* expiryKept(bucket)
      expect(tat).toBe(now + 400)
      const waiting = yield* store.reserve(bucket, slow, 2, 1_000)
      expect(waiting).toMatchObject({ granted: true, at: now + 200 })
      expect(yield* expiryKept(bucket)).toBe(tat + 200)
      yield* store.release(bucket, slow, 2, now + 200)
      expect(yield* expiryKept(bucket)).toBe(tat)
    }).pipe(Effect.provide(RedisStore.layer({ url }, { prefix })), Effect.scoped))

  it.live("a sliding window drops grants a window old as it grows, and its key expires", () =>
    Effect.gen(function*() {
      const admin = new Redis(url)
      yield* Effect.addFinalizer(() => Effect.promise(() => admin.quit()))
      const store = yield* RateLimiterStore
      const key = `trim-${Date.now()}`
      const rule: Rule = { kind: "slidingWindow", limit: 1_000, windowMillis: 50 }
      for (let i = 0; i < 100; i++) expect((yield* store.reserve(key, rule, 1, 0)).granted).toBe(true)
      yield* Effect.sleep("60 millis")
      // The 100 grants are now a window old: they go when the list passes 128 entries.
      for (let i = 0; i < 40; i++) expect((yield* store.reserve(key, rule, 1, 0)).granted).toBe(true)
      expect(yield* Effect.promise(() => admin.llen(prefix + key))).toBeLessThanOrEqual(40)
      expect(yield* Effect.promise(() => admin.pttl(prefix + key))).toBeGreaterThan(0)
    }).pipe(Effect.provide(RedisStore.layer({ url }, { prefix })), Effect.scoped))

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
