import { Observe } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Data, Deferred, Duration, Effect, Fiber, Metric, TestClock } from "effect"
import * as Bulkhead from "../src/Bulkhead.js"
import * as Fallback from "../src/Fallback.js"
import * as Hedge from "../src/Hedge.js"
import * as RateLimiter from "../src/RateLimiter.js"
import * as RateLimiterStore from "../src/RateLimiterStore.js"

class Down extends Data.TaggedError("Down")<{}> {}

const count = <In extends number>(metric: Metric.Metric.Counter<In>, tag: string, name: string) =>
  Effect.map(Metric.value(Metric.tagged(metric, tag, name)), (state) => Number(state.count))

describe("metrics and events", () => {
  it.effect("the rate limiter counts permits, waits and rejections, and says so to observers", () =>
    Effect.gen(function*() {
      const name = `observed-${Date.now()}`
      const limiter = yield* RateLimiter.make(name, { limit: { kind: "slidingWindow", limit: 2, window: "1 second" }, maxWait: "1 second" })
      const events: Array<Observe.Event> = []
      yield* limiter.acquire()
      yield* limiter.acquire()
      const waiting = yield* Effect.fork(limiter.acquire().pipe(Observe.observe((e) => events.push(e))))
      yield* TestClock.adjust(Duration.seconds(1))
      yield* Fiber.join(waiting)
      // The permit of the first grant, a window ago, is free again; then none is.
      yield* limiter.acquire(undefined, { maxWait: 0 })
      yield* Effect.flip(limiter.acquire(undefined, { maxWait: 0 }).pipe(Observe.observe((e) => events.push(e))))
      expect(yield* count(RateLimiter.permitsTotal, "limiter", name)).toBe(4)
      expect(yield* count(RateLimiter.waitsTotal, "limiter", name)).toBe(1)
      expect(yield* count(RateLimiter.rejectionsTotal, "limiter", name)).toBe(1)
      expect(events.map((e) => `${e.source}:${e.kind}`)).toEqual(["rate-limit:wait", "rate-limit:rejected"])
    }).pipe(Effect.provide(RateLimiterStore.layerMemory)))

  it.effect("the bulkhead counts waits and rejections and gauges its occupancy", () =>
    Effect.gen(function*() {
      const name = `observed-${Date.now()}`
      const bulkhead = yield* Bulkhead.make(name, { maxConcurrent: 1, maxQueue: 1 })
      const gate = yield* Deferred.make<void>()
      const running = yield* Effect.fork(bulkhead.execute(Deferred.await(gate)))
      const queued = yield* Effect.fork(bulkhead.execute(Effect.void))
      yield* Effect.yieldNow()
      yield* Effect.flip(bulkhead.execute(Effect.void))
      const gauge = (m: typeof Bulkhead.activeGauge) => Effect.map(Metric.value(Metric.tagged(m, "bulkhead", name)), (s) => s.value)
      expect(yield* gauge(Bulkhead.activeGauge)).toBe(1)
      expect(yield* gauge(Bulkhead.queuedGauge)).toBe(1)
      expect(yield* count(Bulkhead.waitsTotal, "bulkhead", name)).toBe(1)
      const rejected = yield* Metric.value(Bulkhead.rejectionsTotal.pipe(Metric.tagged("bulkhead", name), Metric.tagged("reason", "queue-full")))
      expect(rejected.count).toBe(1)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(running)
      yield* Fiber.join(queued)
      expect(yield* gauge(Bulkhead.activeGauge)).toBe(0)
    }))

  it.effect("hedges fired and won, and fallbacks used, are counted", () =>
    Effect.gen(function*() {
      const name = `observed-${Date.now()}`
      let n = 0
      const call = Effect.suspend(() => n++ === 0 ? Effect.as(Effect.sleep("1 second"), "slow") : Effect.succeed("hedge"))
      const fiber = yield* Effect.fork(Hedge.hedge({ name, delay: "100 millis" })(call))
      yield* TestClock.adjust(Duration.millis(100))
      expect(yield* Fiber.join(fiber)).toBe("hedge")
      expect(yield* count(Hedge.firedTotal, "hedge", name)).toBe(1)
      expect(yield* count(Hedge.wonTotal, "hedge", name)).toBe(1)
      yield* Effect.fail(new Down()).pipe(Fallback.fallback({ name, on: Fallback.tags("Down"), value: () => Effect.void }))
      expect(yield* count(Fallback.usedTotal, "fallback", name)).toBe(1)
    }))
})
