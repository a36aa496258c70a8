import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, FiberRef, Layer } from "effect"
import * as Observe from "../src/Observe.js"

const recorder = () => {
  const events: Array<Observe.Event> = []
  return { events, observer: (event: Observe.Event) => void events.push(event) }
}

describe("Observe", () => {
  it.effect("with no observer, emit calls nothing and emitWith does not build its attributes", () =>
    Effect.gen(function*() {
      expect(yield* FiberRef.get(Observe.currentObservers)).toEqual([])
      let built = 0
      yield* Observe.emit("test", "nothing")
      yield* Observe.emitWith("test", "nothing", () => {
        built++
        return { n: 1 }
      })
      expect(built).toBe(0)
    }))

  it.effect("observe delivers events, in order, only within its scope", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      yield* Observe.emit("test", "before")
      yield* Effect.gen(function*() {
        yield* Observe.emit("test", "one", { n: 1 })
        yield* Observe.emitWith("test", "two", () => ({ n: 2, ok: true }))
      }).pipe(Observe.observe(observer))
      yield* Observe.emit("test", "after")
      expect(events).toEqual([
        { source: "test", kind: "one", attributes: { n: 1 } },
        { source: "test", kind: "two", attributes: { n: 2, ok: true } }
      ])
    }))

  it.effect("nested observers both see an event; the inner one leaves with its scope", () =>
    Effect.gen(function*() {
      const outer = recorder()
      const inner = recorder()
      yield* Effect.gen(function*() {
        yield* Observe.emit("test", "a").pipe(Observe.observe(inner.observer))
        yield* Observe.emit("test", "b")
      }).pipe(Observe.observe(outer.observer))
      expect(outer.events.map((e) => e.kind)).toEqual(["a", "b"])
      expect(inner.events.map((e) => e.kind)).toEqual(["a"])
    }))

  it.effect("forked fibers inherit the observers", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      yield* Effect.gen(function*() {
        const child = yield* Effect.fork(Observe.emit("test", "from-child"))
        yield* Fiber.join(child)
        yield* Effect.forEach([1, 2, 3], (n) => Observe.emit("test", "parallel", { n }), { concurrency: "unbounded" })
      }).pipe(Observe.observe(observer))
      expect(events.filter((e) => e.kind === "from-child")).toHaveLength(1)
      expect(events.filter((e) => e.kind === "parallel").map((e) => e.attributes.n).sort()).toEqual([1, 2, 3])
    }))

  it.effect("a layer adds the observer for its consumers only", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      yield* Observe.emit("test", "inside").pipe(Effect.provide(Observe.layer(observer)))
      yield* Observe.emit("test", "outside")
      expect(events.map((e) => e.kind)).toEqual(["inside"])
    }))

  it.effect("a layer merged with others still installs the observer", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const layer = Layer.mergeAll(Observe.layer(observer), Layer.empty)
      yield* Observe.emit("test", "merged").pipe(Effect.provide(layer))
      expect(events.map((e) => e.kind)).toEqual(["merged"])
    }))

  it.effect("a throwing observer is a defect of the emitting fiber, not swallowed", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(
        Observe.emit("test", "boom").pipe(Observe.observe(() => {
          throw new Error("observer broke")
        }))
      )
      expect(exit._tag).toBe("Failure")
    }))
})
