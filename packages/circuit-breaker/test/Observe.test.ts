import { Observe } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Data, Effect, Fiber, TestClock } from "effect"
import * as Breaker from "../src/Breaker.js"
import * as BreakerStateStore from "../src/BreakerStateStore.js"

class Unavailable extends Data.TaggedError("Unavailable")<{ readonly status: 503 }> {}
const down = Effect.fail(new Unavailable({ status: 503 }))

const recorder = () => {
  const events: Array<Observe.Event> = []
  return { events, observer: (event: Observe.Event) => void events.push(event) }
}

const kinds = (events: ReadonlyArray<Observe.Event>, kind: string) => events.filter((e) => e.kind === kind)

const options = {
  window: { kind: "consecutive", threshold: 3 },
  openDuration: "1 second",
  permittedProbes: 2
} as const

/** Trips the breaker, lets 5 callers race for 2 probes, and lets the probes succeed. */
const scenario = <ES>(b: Breaker.Breaker<ES>) =>
  Effect.gen(function*() {
    yield* Effect.forEach([1, 2, 3], () => Effect.either(b.execute(down)), { discard: true })
    yield* Effect.either(b.execute(Effect.void)) // rejected while open
    yield* TestClock.adjust("1 second")
    const slow = Effect.sleep("100 millis")
    const callers = yield* Effect.fork(
      Effect.forEach(Array.from({ length: 5 }), () => Effect.either(b.execute(slow)), { concurrency: "unbounded" })
    )
    yield* TestClock.adjust("100 millis")
    return yield* Fiber.join(callers)
  })

describe("Breaker events", () => {
  it.effect("5 concurrent callers on a half-open breaker with 2 probes: probe inFlight ≤ 2, closed → open → half-open → closed", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const b = yield* Breaker.make("payments", options)
      const results = yield* scenario(b).pipe(Observe.observe(observer))
      expect(results.filter((r) => r._tag === "Right")).toHaveLength(2)

      expect(events.every((e) => e.source === "breaker" && e.attributes.breaker === "payments")).toBe(true)
      expect(kinds(events, "transition").map((e) => `${e.attributes.from}→${e.attributes.to}`)).toEqual([
        "closed→open",
        "open→half-open",
        "half-open→closed"
      ])
      const probes = kinds(events, "probe")
      expect(probes.map((e) => e.attributes.inFlight)).toEqual([1, 2])
      expect(probes.every((e) => e.attributes.permitted === 2)).toBe(true)
      expect(kinds(events, "probe-done").map((e) => e.attributes.inFlight)).toEqual([1, 0])
      expect(kinds(events, "rejected").map((e) => e.attributes.state)).toEqual(["open", "half-open", "half-open", "half-open"])
      expect(kinds(events, "call").map((e) => e.attributes.outcome)).toEqual(["failure", "failure", "failure", "success", "success"])

      // The order an invariant checker relies on: the trip follows the third failed call, the lazy
      // half-open transition precedes the first probe, and the close follows the last probe's call.
      const order = events.map((e) => e.kind === "transition" ? `${e.attributes.to}` : e.kind)
      expect(order.indexOf("open")).toBe(3)
      expect(order.indexOf("half-open")).toBeLessThan(order.indexOf("probe"))
      expect(order.lastIndexOf("closed")).toBe(order.length - 1)
    }))

  it.effect("an interrupted probe ends with probe-done and an ignored call, and gives its permit back", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const b = yield* Breaker.make("interrupted", { ...options, permittedProbes: 1 })
      yield* Effect.gen(function*() {
        yield* Effect.forEach([1, 2, 3], () => Effect.either(b.execute(down)), { discard: true })
        yield* TestClock.adjust("1 second")
        const probe = yield* Effect.fork(b.execute(Effect.never))
        yield* TestClock.adjust("10 millis")
        yield* Fiber.interrupt(probe)
        yield* b.execute(Effect.void)
      }).pipe(Observe.observe(observer))
      expect(kinds(events, "probe").map((e) => e.attributes.inFlight)).toEqual([1, 1])
      expect(kinds(events, "probe-done").map((e) => e.attributes.inFlight)).toEqual([0, 0])
      expect(kinds(events, "call").map((e) => e.attributes.outcome)).toEqual(["failure", "failure", "failure", "ignored", "success"])
      expect(yield* b.state).toBe("closed")
    }))

  it.effect("isolate, disable and reset are transitions too", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const b = yield* Breaker.make("manual")
      yield* Effect.gen(function*() {
        yield* b.isolate
        yield* Effect.either(b.execute(Effect.void))
        yield* b.disable
        yield* b.execute(Effect.void)
        yield* b.reset
      }).pipe(Observe.observe(observer))
      expect(events.map((e) => e.kind === "transition" ? `${e.attributes.from}→${e.attributes.to}` : e.kind)).toEqual([
        "closed→isolated",
        "rejected",
        "isolated→disabled",
        "disabled→closed"
      ])
    }))

  it.effect("a shared breaker emits the same events from this instance's point of view", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const b = yield* Breaker.makeShared("shared", options)
      yield* scenario(b).pipe(Observe.observe(observer))
      expect(kinds(events, "transition").map((e) => `${e.attributes.from}→${e.attributes.to}`)).toEqual([
        "closed→open",
        "open→half-open",
        "half-open→closed"
      ])
      expect(Math.max(...kinds(events, "probe").map((e) => Number(e.attributes.inFlight)))).toBeLessThanOrEqual(2)
      expect(kinds(events, "probe")).toHaveLength(2)
      expect(kinds(events, "probe-done").map((e) => e.attributes.inFlight)).toEqual([1, 0])
    }).pipe(Effect.provide(BreakerStateStore.layerMemory)))

  it.effect("nothing is observed outside an observer's scope", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const b = yield* Breaker.make("quiet", options)
      yield* Effect.either(b.execute(down))
      yield* b.execute(Effect.void).pipe(Observe.observe(observer))
      yield* Effect.either(b.execute(down))
      expect(events).toEqual([{ source: "breaker", kind: "call", attributes: { breaker: "quiet", outcome: "success" } }])
    }))
})
