import { Failure, Handler } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Data, Duration, Effect, Fiber, Metric, Schedule, Stream, TestClock } from "effect"
import * as Breaker from "../src/Breaker.js"
import * as BreakerStateStore from "../src/BreakerStateStore.js"
import * as Registry from "../src/Registry.js"

class Unavailable extends Data.TaggedError("Unavailable")<{ readonly status: 503 }> {}
class Invalid extends Data.TaggedError("Invalid")<{ readonly status: 422 }> {}

const down = Effect.fail(new Unavailable({ status: 503 }))
const invalid = Effect.fail(new Invalid({ status: 422 }))
const ok = Effect.succeed("ok")

/** Runs `n` calls of `effect` through the breaker, ignoring their errors. */
const calls = <A, E, ES>(b: Breaker.Breaker<ES>, n: number, effect: Effect.Effect<A, E>) =>
  Effect.forEach(Array.from({ length: n }), () => Effect.either(b.execute(effect)), { discard: true })

describe("Breaker", () => {
  it.effect("a count window trips on the failure rate once it holds the minimum calls, then rejects fast", () =>
    Effect.gen(function*() {
      const b = yield* Breaker.make("payments", {
        window: { kind: "count", size: 10 },
        minimumCalls: 6,
        failureRateThreshold: 0.5,
        openDuration: "10 seconds"
      })
      yield* calls(b, 2, ok)
      yield* calls(b, 3, down) // 3/5 failed, but fewer than 6 calls
      expect(yield* b.state).toBe("closed")
      yield* calls(b, 1, ok) // 3/6 = 50 %
      expect(yield* b.state).toBe("open")
      yield* TestClock.adjust("4 seconds")
      let ran = false
      const error = yield* Effect.flip(b.execute(Effect.sync(() => (ran = true))))
      expect(ran).toBe(false)
      expect(error).toBeInstanceOf(Breaker.BreakerOpen)
      const open = error as Breaker.BreakerOpen
      expect(open).toMatchObject({ key: "payments", state: "open", closesAt: 10_000 })
      expect(Duration.toMillis(open.retryAfter!)).toBe(6_000)
      expect(yield* Failure.classify(open)).toMatchObject({ classification: "transient", category: "dependency" })
    }))

  it.effect("a permanent failure does not trip by default; the failure predicate decides", () =>
    Effect.gen(function*() {
      const lenient = yield* Breaker.make("a", { window: { kind: "consecutive", threshold: 3 } })
      yield* calls(lenient, 10, invalid)
      expect(yield* lenient.state).toBe("closed")
      const strict = yield* Breaker.make("b", { window: { kind: "consecutive", threshold: 3 }, isFailure: () => true })
      yield* calls(strict, 3, invalid)
      expect(yield* strict.state).toBe("open")
    }))

  it.effect("a consecutive window resets on success", () =>
    Effect.gen(function*() {
      const b = yield* Breaker.make("c", { window: { kind: "consecutive", threshold: 3 } })
      yield* calls(b, 2, down)
      yield* calls(b, 1, ok)
      yield* calls(b, 2, down)
      expect(yield* b.state).toBe("closed")
      yield* calls(b, 1, down)
      expect(yield* b.state).toBe("open")
    }))

  it.effect("a time window forgets calls older than its length", () =>
    Effect.gen(function*() {
      const b = yield* Breaker.make("t", { window: { kind: "time", seconds: 10 }, minimumCalls: 4, failureRateThreshold: 0.5 })
      yield* calls(b, 3, down)
      yield* TestClock.adjust("10 seconds")
      yield* calls(b, 3, ok)
      yield* calls(b, 1, down)
      expect((yield* b.toJSON).window).toMatchObject({ calls: 4, failures: 1 })
      expect(yield* b.state).toBe("closed")
      yield* calls(b, 1, down) // 2 of 5 in the window
      yield* calls(b, 1, down) // 3 of 6
      expect(yield* b.state).toBe("open")
    }))

  it.effect("trips on the slow-call rate, timed with the Effect clock", () =>
    Effect.gen(function*() {
      const b = yield* Breaker.make("slow", {
        window: { kind: "count", size: 4 },
        minimumCalls: 4,
        slowCallDuration: "1 second",
        slowCallRateThreshold: 0.75
      })
      const slow = Effect.sleep("1500 millis").pipe(Effect.as("late"))
      const fiber = yield* Effect.fork(Effect.all([b.execute(ok), b.execute(slow), b.execute(slow), b.execute(slow)]))
      yield* TestClock.adjust("10 seconds")
      expect(yield* Fiber.join(fiber)).toEqual(["ok", "late", "late", "late"])
      expect(yield* b.state).toBe("open")
    }))

  it.effect("half-open admits the permitted probes, closes on their success, reopens on failure with backoff", () =>
    Effect.gen(function*() {
      const b = yield* Breaker.make("h", {
        window: { kind: "consecutive", threshold: 1 },
        openDuration: Breaker.exponentialOpenDuration({ initial: "1 second", max: "4 seconds" }),
        permittedProbes: 2,
        probeSuccessRatio: 1
      })
      yield* calls(b, 1, down)
      expect((yield* b.toJSON).openUntil).toBe(1_000)
      yield* TestClock.adjust("1 second")
      // a failed probe reopens for twice as long
      yield* calls(b, 1, down)
      expect(yield* b.toJSON).toMatchObject({ state: "open", opens: 2, openUntil: 3_000 })
      yield* TestClock.adjust("2 seconds")
      const gate = Effect.sleep("100 millis").pipe(Effect.as("probe"))
      const probes = yield* Effect.fork(Effect.all([b.execute(gate), b.execute(gate)], { concurrency: "unbounded" }))
      yield* TestClock.adjust("50 millis")
      expect(yield* Effect.flip(b.execute(ok))).toMatchObject({ _tag: "BreakerOpen", state: "half-open" })
      yield* TestClock.adjust("50 millis")
      expect(yield* Fiber.join(probes)).toEqual(["probe", "probe"])
      expect(yield* b.toJSON).toMatchObject({ state: "closed", opens: 0 })
    }))

  it.effect("the open duration can follow a Schedule over consecutive openings", () =>
    Effect.gen(function*() {
      const b = yield* Breaker.make("sched", {
        window: { kind: "consecutive", threshold: 1 },
        openDuration: Schedule.exponential("1 second", 3)
      })
      yield* calls(b, 1, down)
      expect((yield* b.toJSON).openUntil).toBe(1_000)
      yield* TestClock.adjust("1 second")
      yield* calls(b, 1, down) // failed probe: second opening
      expect((yield* b.toJSON).openUntil).toBe(1_000 + 3_000)
      yield* TestClock.adjust("3 seconds")
      yield* calls(b, 1, down)
      expect((yield* b.toJSON).openUntil).toBe(4_000 + 9_000)
    }))

  it.effect("an interrupted probe gives its permit back", () =>
    Effect.gen(function*() {
      const b = yield* Breaker.make("i", { window: { kind: "consecutive", threshold: 1 }, openDuration: "1 second" })
      yield* calls(b, 1, down)
      yield* TestClock.adjust("1 second")
      const hanging = yield* Effect.fork(b.execute(Effect.never))
      yield* TestClock.adjust("1 millis")
      expect(yield* Effect.flip(b.execute(ok))).toMatchObject({ state: "half-open" })
      yield* Fiber.interrupt(hanging)
      expect(yield* b.execute(ok)).toBe("ok")
      expect(yield* b.state).toBe("closed")
    }))

  it.effect("manual control: isolate, disable and reset", () =>
    Effect.gen(function*() {
      const b = yield* Breaker.make("m", { window: { kind: "consecutive", threshold: 1 } })
      yield* b.isolate
      expect(yield* Effect.flip(b.execute(ok))).toMatchObject({ state: "isolated", closesAt: undefined })
      yield* TestClock.adjust("1 day")
      expect(yield* b.state).toBe("isolated")
      yield* b.disable
      yield* calls(b, 5, down)
      expect(yield* b.execute(ok)).toBe("ok")
      expect(yield* b.state).toBe("disabled")
      yield* b.reset
      expect(yield* b.state).toBe("closed")
      yield* calls(b, 1, down)
      expect(yield* b.state).toBe("open")
      yield* b.reset
      expect(yield* b.execute(ok)).toBe("ok")
    }))

  it.effect("transitions are a stream and metrics", () =>
    Effect.gen(function*() {
      const b = yield* Breaker.make("observed", { window: { kind: "consecutive", threshold: 1 }, openDuration: "1 second" })
      const seen = yield* Effect.fork(Stream.runCollect(Stream.take(b.transitions, 3)))
      yield* Effect.repeatN(Effect.yieldNow(), 50)
      yield* calls(b, 1, down)
      yield* TestClock.adjust("1 second")
      yield* calls(b, 1, ok)
      const transitions = Chunk.toArray(yield* Fiber.join(seen))
      expect(transitions).toEqual([
        { key: "observed", from: "closed", to: "open", at: 0 },
        { key: "observed", from: "open", to: "half-open", at: 1000 },
        { key: "observed", from: "half-open", to: "closed", at: 1000 }
      ])
      const gauge = yield* Metric.value(Metric.tagged(Breaker.stateGauge, "breaker", "observed"))
      expect(gauge.value).toBe(0)
      const opened = yield* Metric.value(
        Breaker.transitionsTotal.pipe(Metric.tagged("breaker", "observed"), Metric.tagged("from", "closed"), Metric.tagged("to", "open"))
      )
      expect(opened.count).toBe(1)
    }))

  it.effect("state exports with toJSON and imports with initialState; bad input is a typed error", () =>
    Effect.gen(function*() {
      const options: Breaker.Options = { window: { kind: "count", size: 5 }, minimumCalls: 5 }
      const a = yield* Breaker.make("x", options)
      yield* calls(a, 4, down)
      const exported = JSON.parse(JSON.stringify(yield* a.toJSON))
      const b = yield* Breaker.make("x", { ...options, initialState: exported })
      expect(yield* b.state).toBe("closed")
      yield* calls(b, 1, down)
      expect(yield* b.state).toBe("open")
      const wrongKind = yield* Effect.flip(Breaker.make("x", { window: { kind: "consecutive", threshold: 2 }, initialState: exported }))
      expect(wrongKind).toBeInstanceOf(Breaker.InvalidBreakerState)
      const garbage = yield* Effect.flip(Breaker.make("x", { initialState: { state: "melted" } }))
      expect(garbage).toBeInstanceOf(Breaker.InvalidBreakerState)
      expect(yield* Failure.classify(garbage)).toEqual({ classification: "permanent", category: "schema" })
    }))

  it.effect("breakers over one shared store trip together", () =>
    Effect.gen(function*() {
      const options: Breaker.Options = { window: { kind: "count", size: 10 }, minimumCalls: 4 }
      const instances = yield* Effect.all(Array.from({ length: 3 }, () => Breaker.makeShared("shared", options)))
      yield* calls(instances[0]!, 1, down)
      yield* calls(instances[1]!, 1, down)
      yield* calls(instances[2]!, 1, ok)
      expect(yield* instances[0]!.state).toBe("closed")
      yield* calls(instances[2]!, 1, down)
      // Each instance learns of the trip at its next sync (`state` is one).
      for (const b of instances) {
        expect(yield* b.state).toBe("open")
        expect(yield* Effect.flip(b.execute(ok))).toBeInstanceOf(Breaker.BreakerOpen)
      }
      yield* instances[1]!.reset
      expect(yield* instances[0]!.state).toBe("closed")
      expect(yield* instances[0]!.execute(ok)).toBe("ok")
    }).pipe(Effect.provide(BreakerStateStore.layerMemory)))

  it.effect("a registry keeps one breaker per key, created on demand", () =>
    Effect.gen(function*() {
      const registry = yield* Registry.make({ window: { kind: "consecutive", threshold: 2 } })
      yield* Effect.all([registry.execute("api.a", down), registry.execute("api.a", down)], { mode: "either" })
      expect(yield* Effect.flip(registry.execute("api.a", ok))).toBeInstanceOf(Breaker.BreakerOpen)
      expect(yield* registry.execute("api.b", ok)).toBe("ok")
      expect(yield* registry.get("api.a")).toBe(yield* registry.get("api.a"))
      expect([...(yield* registry.keys)].sort()).toEqual(["api.a", "api.b"])
      const same = yield* Effect.all([registry.get("new"), registry.get("new")], { concurrency: 2 })
      expect(same[0]).toBe(same[1])
    }))

  it.effect("as middleware it is the breaker stage and wraps each attempt", () =>
    Effect.gen(function*() {
      const b = yield* Breaker.make("mw", { window: { kind: "consecutive", threshold: 1 } })
      const handler = Breaker.middleware(b)(Handler.timeout("1 second")(() => down))
      expect(Handler.stagesOf(handler)).toEqual(["timeout", "breaker"])
      const registry = yield* Registry.make()
      expect(Handler.stagesOf(Registry.middleware(registry, (e) => e.subject)(() => Effect.void))).toEqual(["breaker"])
      const envelope = { id: "1", type: "t", source: "s", subject: "k", time: undefined as never, data: 1, headers: {}, attempt: 1 }
      expect(yield* Effect.flip(handler(envelope))).toBeInstanceOf(Unavailable)
      expect(yield* Effect.flip(handler(envelope))).toBeInstanceOf(Breaker.BreakerOpen)
    }))
})
