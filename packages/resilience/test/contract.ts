/** The contract every RateLimiterStore driver meets, run over each driver (and the limiter over it). */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Layer } from "effect"
import * as RateLimiter from "../src/RateLimiter.js"
import { type Decision, type Rule, RateLimiterStore } from "../src/RateLimiterStore.js"

const unique = (name: string) => `${name}-${Date.now()}-${Math.random().toString(36).slice(2)}`

/** Grants in no half-open window of `windowMillis` number more than `limit`: sorted[i + limit] is at least a window after sorted[i]. */
export const maxInAnyWindow = (times: ReadonlyArray<number>, windowMillis: number): number => {
  const sorted = [...times].sort((a, b) => a - b)
  let most = 0
  let start = 0
  for (let end = 0; end < sorted.length; end++) {
    while (sorted[end]! - sorted[start]! >= windowMillis) start++
    most = Math.max(most, end - start + 1)
  }
  return most
}

const granted = (decision: Decision) => {
  expect(decision.granted).toBe(true)
  return decision as Extract<Decision, { granted: true }>
}

/** Registers the contract suite for a driver; `layer` must give every test a working store. */
export const suite = <E>(name: string, layer: Layer.Layer<RateLimiterStore, E>) =>
  describe(`RateLimiterStore contract: ${name}`, () => {
    it.live("a token bucket grants its capacity at once, then refuses with the time to the next permit", () =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.make(unique("bucket"), {
          limit: { kind: "tokenBucket", permits: 5, per: "1 minute" }
        })
        for (let i = 0; i < 5; i++) expect(yield* limiter.tryAcquire("partner")).toBe(true)
        expect(yield* limiter.tryAcquire("partner")).toBe(false)
        const refused = yield* Effect.flip(limiter.acquire("partner", { maxWait: "1 second" }))
        expect(refused).toBeInstanceOf(RateLimiter.RateLimited)
        const retryAfter = Duration.toMillis((refused as RateLimiter.RateLimited).retryAfter)
        // One permit every 12 s; a few ms of the interval have passed since the burst.
        expect(retryAfter).toBeGreaterThan(11_000)
        expect(retryAfter).toBeLessThanOrEqual(12_000)
        // Another key has its own bucket.
        expect(yield* limiter.tryAcquire("other")).toBe(true)
      }).pipe(Effect.provide(layer)))

    it.live("a sliding window refuses beyond its limit, and a refusal takes nothing", () =>
      Effect.gen(function*() {
        const store = yield* RateLimiterStore
        const key = unique("window")
        const rule: Rule = { kind: "slidingWindow", limit: 3, windowMillis: 60_000 }
        const first = granted(yield* store.reserve(key, rule, 1, 0))
        granted(yield* store.reserve(key, rule, 2, 0))
        const refused = yield* store.reserve(key, rule, 1, 0)
        expect(refused.granted).toBe(false)
        if (!refused.granted) {
          expect(refused.retryAfterMillis).toBeGreaterThan(59_000)
          expect(refused.retryAfterMillis).toBeLessThanOrEqual(60_000)
        }
        // The refusals recorded nothing: a reservation that may wait gets the first slot after the window.
        expect((yield* store.reserve(key, rule, 1, 0)).granted).toBe(false)
        const later = granted(yield* store.reserve(key, rule, 1, 120_000))
        expect(later.at).toBe(first.at + 60_000)
      }).pipe(Effect.provide(layer)))

    it.live("an abandoned reservation is given back when it is the latest, and kept when later ones build on it", () =>
      Effect.gen(function*() {
        const store = yield* RateLimiterStore
        const bucket = unique("release-bucket")
        const rule: Rule = { kind: "tokenBucket", capacity: 1, intervalMillis: 60_000 }
        granted(yield* store.reserve(bucket, rule, 1, 0))
        const waiting = granted(yield* store.reserve(bucket, rule, 1, 120_000))
        yield* store.release(bucket, rule, 1, waiting.at)
        // The next one takes the slot given back.
        const again = granted(yield* store.reserve(bucket, rule, 1, 120_000))
        expect(Math.abs(again.at - waiting.at)).toBeLessThan(1_000)
        // Not the latest: a later grant was computed on top of it, so giving it back is refused.
        const later = granted(yield* store.reserve(bucket, rule, 1, 180_000))
        yield* store.release(bucket, rule, 1, again.at)
        const after = granted(yield* store.reserve(bucket, rule, 1, 240_000))
        expect(after.at - later.at).toBeGreaterThan(59_000)

        const window = unique("release-window")
        const w: Rule = { kind: "slidingWindow", limit: 2, windowMillis: 60_000 }
        const first = granted(yield* store.reserve(window, w, 2, 0))
        const queued = granted(yield* store.reserve(window, w, 1, 120_000))
        expect(queued.at).toBe(first.at + 60_000)
        yield* store.release(window, w, 1, queued.at)
        // Given back: the window holds two grants again, the next waiter gets the first slot after it.
        const next = granted(yield* store.reserve(window, w, 2, 120_000))
        expect(next.at).toBe(first.at + 60_000)
        expect((yield* store.reserve(window, w, 1, 0)).granted).toBe(false)
      }).pipe(Effect.provide(layer)))

    it.live("waiters queue in the store: concurrent acquisitions proceed one interval apart", () =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.make(unique("queue"), {
          limit: { kind: "tokenBucket", permits: 40, per: "1 second", capacity: 1 }
        })
        const started = Date.now()
        yield* Effect.forEach(Array.from({ length: 8 }), () => limiter.acquire("k"), { concurrency: "unbounded", discard: true })
        // Eight permits, one at once and seven 25 ms apart.
        expect(Date.now() - started).toBeGreaterThanOrEqual(170)
      }).pipe(Effect.provide(layer)))

    it.live("concurrent reservations never put more than the limit in any window", () =>
      Effect.gen(function*() {
        const store = yield* RateLimiterStore
        const key = unique("concurrent")
        const rule: Rule = { kind: "slidingWindow", limit: 5, windowMillis: 100 }
        const grants = yield* Effect.forEach(
          Array.from({ length: 40 }),
          () => Effect.map(store.reserve(key, rule, 1, 10_000), (d) => granted(d).at),
          { concurrency: 10 }
        )
        expect(grants).toHaveLength(40)
        expect(maxInAnyWindow(grants, 100)).toBeLessThanOrEqual(5)
        // 40 permits take at least 7 windows after the first burst.
        const sorted = grants.sort((a, b) => a - b)
        expect(sorted[39]! - sorted[0]!).toBeGreaterThanOrEqual(700)
      }).pipe(Effect.provide(layer)))

    it.live("a token bucket's grants never exceed capacity plus the refill in any window", () =>
      Effect.gen(function*() {
        const store = yield* RateLimiterStore
        const key = unique("gcra")
        const rule: Rule = { kind: "tokenBucket", capacity: 3, intervalMillis: 20 }
        const grants = yield* Effect.forEach(
          Array.from({ length: 30 }),
          () => Effect.map(store.reserve(key, rule, 1, 10_000), (d) => granted(d).at),
          { concurrency: 10 }
        )
        // Any 100 ms holds at most 3 + 100 / 20 grants.
        expect(maxInAnyWindow(grants, 100)).toBeLessThanOrEqual(8)
      }).pipe(Effect.provide(layer)))

    it.live("more permits than the limit ever grants at once is a typed error, not a wait", () =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.make(unique("too-many"), {
          limit: { kind: "slidingWindow", limit: 2, window: "1 second" }
        })
        const exit = yield* Effect.exit(limiter.acquire("k", { permits: 3 }))
        expect(Exit.isFailure(exit) && JSON.stringify(exit.cause)).toMatch(/InvalidLimit/)
        expect(yield* limiter.tryAcquire("k", 2)).toBe(true)
        expect(yield* limiter.tryAcquire("k", 1)).toBe(false)
      }).pipe(Effect.provide(layer)))
  })
