import { Envelope, Observe } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Fiber, Schema, TestClock } from "effect"
import * as Store from "../src/IdempotencyStore.js"
import * as MemoryStore from "../src/IdempotencyStore/Memory.js"
import { idempotent } from "../src/Idempotent.js"

const envelope = (id: string) =>
  Envelope.make({ id, type: "payment.captured", source: "/test", subject: "o-1", data: { n: 1 }, time: DateTime.unsafeMake(0) })

class Boom extends Schema.TaggedError<Boom>()("Boom", {}) {}

const recorder = () => {
  const events: Array<Observe.Event> = []
  return { events, observer: (event: Observe.Event) => void events.push(event) }
}

const summary = (events: ReadonlyArray<Observe.Event>) =>
  events.map((e) => e.kind === "claim" ? `claim:${e.attributes.outcome}` : e.kind)

describe("Idempotency events", () => {
  it.effect("the middleware: fresh, then completed for the duplicate; a failure releases", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const wrapped = idempotent<{ n: number }>({ lease: "10 seconds" })(() => Effect.void)
      const env = yield* envelope("evt-1")
      yield* Effect.gen(function*() {
        yield* wrapped(env)
        yield* wrapped(env)
        yield* Effect.either(idempotent<{ n: number }>({ lease: "10 seconds" })(() => new Boom())(yield* envelope("evt-2")))
      }).pipe(Observe.observe(observer))
      expect(events.every((e) => e.source === "idempotency")).toBe(true)
      expect(summary(events)).toEqual(["claim:fresh", "complete", "claim:completed", "claim:fresh", "release"])
      expect(events.map((e) => e.attributes.key)).toEqual(["id:evt-1", "id:evt-1", "id:evt-1", "id:evt-2", "id:evt-2"])
    }).pipe(Effect.provide(MemoryStore.layer())))

  it.effect("a duplicate racing a live run: claim in-progress, wait, then completed", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const slow = Effect.as(Effect.sleep("100 millis"), 42)
      const first = yield* Effect.fork(Store.run("k", slow, Schema.Number, { lease: "10 seconds" }))
      yield* TestClock.adjust("1 millis")
      const duplicate = yield* Effect.fork(
        Store.run("k", Effect.succeed(0), Schema.Number, { lease: "10 seconds" }).pipe(Observe.observe(observer))
      )
      yield* TestClock.adjust("200 millis")
      expect(yield* Fiber.join(first)).toBe(42)
      expect(yield* Fiber.join(duplicate)).toBe(42)
      expect(summary(events)).toEqual(["claim:in-progress", "wait", "claim:completed"])
    }).pipe(Effect.provide(MemoryStore.layer())))

  it.effect("onInProgress nack: claim in-progress and no wait", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const first = yield* Effect.fork(Store.run("k", Effect.never, Schema.Number, { lease: "10 seconds" }))
      yield* TestClock.adjust("1 millis")
      const refused = yield* Effect.either(
        Store.claimOrWait("k", { lease: "10 seconds", onInProgress: "nack" }).pipe(Observe.observe(observer))
      )
      expect(refused._tag).toBe("Left")
      expect(summary(events)).toEqual(["claim:in-progress"])
      yield* Fiber.interrupt(first)
    }).pipe(Effect.provide(MemoryStore.layer())))

  it.effect("a run that outlives its lease and is taken over: lease-lost on complete", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const slow = Effect.as(Effect.sleep("2 seconds"), 1)
      const first = yield* Effect.fork(Store.run("k", slow, Schema.Number, { lease: "1 second" }).pipe(Observe.observe(observer)))
      yield* TestClock.adjust("1500 millis")
      yield* Store.run("k", Effect.succeed(2), Schema.Number, { lease: "10 seconds" })
      yield* TestClock.adjust("1 second")
      const exit = yield* Fiber.await(first)
      expect(exit._tag).toBe("Failure")
      expect(summary(events)).toEqual(["claim:fresh", "lease-lost"])
      expect(events[1]!.attributes).toMatchObject({ key: "k", operation: "complete" })
    }).pipe(Effect.provide(MemoryStore.layer())))
})
