import { Envelope, Handler } from "@bulwark/core"
import { Breaker } from "@bulwark/circuit-breaker"
import { Retry } from "@bulwark/retry"
import { describe, expect, it } from "@effect/vitest"
import { Data, Effect, pipe, Schedule } from "effect"
import * as Bulkhead from "../src/Bulkhead.js"
import * as Fallback from "../src/Fallback.js"
import * as Hedge from "../src/Hedge.js"
import * as RateLimiter from "../src/RateLimiter.js"
import * as RateLimiterStore from "../src/RateLimiterStore.js"

class Busy extends Data.TaggedError("Busy")<{}> {}

const envelope = Envelope.make({ type: "order.placed", source: "test", subject: "order-1", data: { amount: 10 } })

describe("middleware order", () => {
  it.effect("the whole stack, innermost first, passes Handler.checkOrder", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make("partner", { limit: { kind: "slidingWindow", limit: 100, window: "1 second" } })
      const bulkhead = yield* Bulkhead.make("partner", { maxConcurrent: 4 })
      const breaker = yield* Breaker.make("partner")
      const handler: Handler.Handler<{ amount: number }> = () => Effect.void
      const stack = pipe(
        handler,
        Handler.timeout("1 second"),
        Breaker.middleware(breaker),
        RateLimiter.middleware(limiter, { key: (e) => e.source }),
        Bulkhead.middleware(bulkhead),
        Hedge.middleware({ delay: "200 millis" }),
        Retry.middleware(Retry.policy({ maxAttempts: 3, schedule: Schedule.spaced("1 millis") })),
        Fallback.middleware({ on: Fallback.tags("RetryExhausted"), value: () => Effect.void })
      )
      expect(Handler.stagesOf(stack)).toEqual(["timeout", "breaker", "rateLimit", "bulkhead", "hedge", "retry", "fallback"])
      yield* Handler.checkOrder(stack)
      yield* stack(yield* envelope)
    }).pipe(Effect.provide(RateLimiterStore.layerMemory)))

  it.effect("a rate limit outside retry, or a bulkhead inside the breaker, is refused", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make("wrong", { limit: { kind: "slidingWindow", limit: 1, window: "1 second" } })
      const bulkhead = yield* Bulkhead.make("wrong", { maxConcurrent: 1 })
      const breaker = yield* Breaker.make("wrong")
      const outside = pipe((() => Effect.void) as Handler.Handler<unknown>, Retry.middleware(Retry.policy()), RateLimiter.middleware(limiter))
      expect(yield* Effect.flip(Handler.checkOrder(outside))).toMatchObject({ inner: "rateLimit", outer: "retry" })
      const inside = pipe((() => Effect.void) as Handler.Handler<unknown>, Bulkhead.middleware(bulkhead), Breaker.middleware(breaker))
      expect(yield* Effect.flip(Handler.checkOrder(inside))).toMatchObject({ inner: "breaker", outer: "bulkhead" })
    }).pipe(Effect.provide(RateLimiterStore.layerMemory)))

  it.live("inside retry, every attempt takes a permit; the limiter's own rejection never trips the breaker", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make("attempts", { limit: { kind: "slidingWindow", limit: 3, window: "1 hour" }, maxWait: 0 })
      const breaker = yield* Breaker.make("attempts", { window: { kind: "consecutive", threshold: 1 } })
      let calls = 0
      const handler: Handler.Handler<unknown, Busy> = () => Effect.suspend(() => (calls++, Effect.fail(new Busy())))
      const stack = pipe(
        handler,
        Breaker.middleware(breaker),
        RateLimiter.middleware(limiter),
        Retry.middleware(Retry.policy({ maxAttempts: 3, schedule: Schedule.spaced("1 millis"), retryOn: (e) => e instanceof Busy }))
      )
      yield* breaker.disable
      const exhausted = yield* Effect.flip(stack(yield* envelope))
      expect(exhausted).toMatchObject({ _tag: "RetryExhausted", attempts: 3 })
      expect(calls).toBe(3)
      yield* breaker.reset
      // Three attempts took the three permits: the next is refused by the limiter, before the breaker.
      const refused = yield* Effect.flip(stack(yield* envelope))
      expect(refused).toBeInstanceOf(RateLimiter.RateLimited)
      expect(calls).toBe(3)
      expect(yield* breaker.state).toBe("closed")
    }).pipe(Effect.provide(RateLimiterStore.layerMemory)))

  it.effect("each piece works around any Effect, not only handlers", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make("any", { limit: { kind: "tokenBucket", permits: 1, per: "1 hour" }, maxWait: 0 })
      const bulkhead = yield* Bulkhead.make("any", { maxConcurrent: 1 })
      const call = Effect.succeed("quote").pipe(
        RateLimiter.withPermit(limiter, "tenant-1"),
        (self) => bulkhead.execute(self, "tenant-1"),
        Fallback.fallback({ on: Fallback.tags("RateLimited"), value: () => Effect.succeed("cached") })
      )
      expect(yield* call).toBe("quote")
      expect(yield* call).toBe("cached")
    }).pipe(Effect.provide(RateLimiterStore.layerMemory)))
})
