/**
 * Hedging around the real gates (memory rate limiter, bulkhead) on the TestClock: the hedge delay counts
 * from when a copy got its permit or slot, so a throttled call is not hedged; a copy (or any waiter)
 * interrupted while it waits for a permit gives it back, so losers and timeouts do not lower the rate.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, Fiber, Metric, TestClock } from "effect"
import * as Bulkhead from "../src/Bulkhead.js"
import * as Hedge from "../src/Hedge.js"
import * as RateLimiter from "../src/RateLimiter.js"
import * as RateLimiterStore from "../src/RateLimiterStore.js"

const unique = (name: string) => `${name}-${Date.now()}-${Math.random().toString(36).slice(2)}`

const fired = (name: string) =>
  Effect.map(Metric.value(Metric.tagged(Hedge.firedTotal, "hedge", name)), (state) => Number(state.count))

// A downstream that answers after `latency` ms, recording when each call reached it.
const downstream = (latency: number) => {
  const starts: Array<number> = []
  const call = Effect.flatMap(Clock.currentTimeMillis, (now) => {
    starts.push(now)
    return Effect.as(Effect.sleep(Duration.millis(latency)), starts.length)
  })
  return { starts, call }
}

// The time a fresh `acquire` (made at the current time) is granted at.
const grantedAt = (limiter: RateLimiter.RateLimiter) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Effect.zipRight(limiter.acquire(), Clock.currentTimeMillis))
    yield* TestClock.adjust(Duration.seconds(10))
    return yield* Fiber.join(fiber)
  })

describe("hedging through a rate limiter", () => {
  it.effect("a call queued for a permit is not hedged while it queues: the delay starts at the grant", () =>
    Effect.gen(function*() {
      const name = unique("queued")
      const limiter = yield* RateLimiter.make(unique("limit"), { limit: { kind: "tokenBucket", permits: 1, per: "1 second" } })
      expect(yield* limiter.tryAcquire()).toBe(true)
      // The next permit is 1 s away; the call answers 300 ms after it gets one; the hedge delay is 100 ms.
      const d = downstream(300)
      const hedged = Hedge.hedge({ name, delay: "100 millis" })(Effect.zipRight(limiter.acquire(), d.call))
      const fiber = yield* Effect.fork(hedged)
      yield* TestClock.adjust(Duration.millis(900))
      expect(yield* fired(name)).toBe(0)
      yield* TestClock.adjust(Duration.millis(400))
      expect(yield* Fiber.join(fiber)).toBe(1)
      // One hedge, sent 100 ms after the first copy got its permit (at 1 000 ms), not 100 ms after the call.
      expect(yield* fired(name)).toBe(1)
      expect(d.starts).toEqual([1_000])
      // The hedge was still waiting for its permit (due at 2 000 ms) when the first copy answered at
      // 1 300 ms: it gave the permit back, so the next caller gets it at 2 000 ms, not 3 000 ms.
      expect(yield* grantedAt(limiter)).toBe(2_000)
    }).pipe(Effect.provide(RateLimiterStore.layerMemory)))

  it.effect("a losing hedge that waits for a sliding-window permit gives it back", () =>
    Effect.gen(function*() {
      const name = unique("window")
      const limiter = yield* RateLimiter.make(unique("limit"), { limit: { kind: "slidingWindow", limit: 2, window: "1 second" } })
      const d = downstream(500)
      const hedged = Hedge.hedge({ name, delay: "100 millis" })(Effect.zipRight(limiter.acquire(), d.call))
      // Two calls at once take the window's two permits; each is hedged at 100 ms, and the hedges queue for
      // the permits of the next window (1 000 ms). Both first copies answer at 500 ms.
      const a = yield* Effect.fork(hedged)
      const b = yield* Effect.fork(hedged)
      yield* TestClock.adjust(Duration.millis(600))
      yield* Fiber.join(a)
      yield* Fiber.join(b)
      expect(yield* fired(name)).toBe(2)
      expect(d.starts).toEqual([0, 0])
      // Both hedges gave their permits back: the next two callers get them as soon as the window allows.
      const c = yield* Effect.fork(Effect.zipRight(limiter.acquire(), Clock.currentTimeMillis))
      const e = yield* Effect.fork(Effect.zipRight(limiter.acquire(), Clock.currentTimeMillis))
      yield* TestClock.adjust(Duration.seconds(5))
      expect([yield* Fiber.join(c), yield* Fiber.join(e)]).toEqual([1_000, 1_000])
    }).pipe(Effect.provide(RateLimiterStore.layerMemory)))

  it.effect("a waiter that gives up (a timeout) gives its permit back", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make(unique("limit"), { limit: { kind: "tokenBucket", permits: 1, per: "1 second" } })
      yield* limiter.acquire()
      const gaveUp = yield* Effect.fork(Effect.timeout(limiter.acquire(), "500 millis"))
      yield* TestClock.adjust(Duration.millis(600))
      expect((yield* Effect.either(Fiber.join(gaveUp)))._tag).toBe("Left")
      // Its reservation (at 1 000 ms) was the latest: the next caller has it.
      expect(yield* grantedAt(limiter)).toBe(1_000)
    }).pipe(Effect.provide(RateLimiterStore.layerMemory)))

  it.effect("a throttled limit keeps its rate under hedging: 2 per second stay 2 per second", () =>
    Effect.gen(function*() {
      const name = unique("rate")
      const limiter = yield* RateLimiter.make(unique("limit"), {
        limit: { kind: "slidingWindow", limit: 2, window: "1 second" },
        maxWait: "1 minute"
      })
      // Ten calls at once through a limit of 2 per second, a downstream answering in 50 ms, hedged at 100 ms:
      // no copy runs unanswered for 100 ms, so none is hedged and the calls go out 2 a second.
      const d = downstream(50)
      const hedged = Hedge.hedge({ name, delay: "100 millis" })(Effect.zipRight(limiter.acquire(), d.call))
      const fiber = yield* Effect.fork(Effect.all(Array.from({ length: 10 }, () => hedged), { concurrency: "unbounded" }))
      yield* TestClock.adjust(Duration.seconds(10))
      yield* Fiber.join(fiber)
      expect(yield* fired(name)).toBe(0)
      expect(d.starts).toEqual([0, 0, 1_000, 1_000, 2_000, 2_000, 3_000, 3_000, 4_000, 4_000])
    }).pipe(Effect.provide(RateLimiterStore.layerMemory)))
})

describe("hedging through a bulkhead", () => {
  it.effect("a call queued for a slot is not hedged while it queues", () =>
    Effect.gen(function*() {
      const name = unique("slot")
      const bulkhead = yield* Bulkhead.make(unique("bulkhead"), { maxConcurrent: 1, maxQueue: 10 })
      const busy = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(bulkhead.execute(Deferred.await(busy)))
      yield* Effect.yieldNow()
      const d = downstream(50)
      const fiber = yield* Effect.fork(Hedge.hedge({ name, delay: "100 millis" })(bulkhead.execute(d.call)))
      yield* TestClock.adjust(Duration.seconds(1))
      expect(yield* fired(name)).toBe(0)
      yield* Deferred.succeed(busy, undefined)
      yield* Fiber.join(holder)
      yield* TestClock.adjust(Duration.millis(100))
      expect(yield* Fiber.join(fiber)).toBe(1)
      expect(yield* fired(name)).toBe(0)
      expect(d.starts).toEqual([1_000])
    }))
})
