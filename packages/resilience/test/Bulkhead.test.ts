import { Failure } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Option, TestClock } from "effect"
import * as Bulkhead from "../src/Bulkhead.js"

describe("Bulkhead", () => {
  it.effect("runs at most maxConcurrent at once, queues up to maxQueue and rejects the rest, typed", () =>
    Effect.gen(function*() {
      const bulkhead = yield* Bulkhead.make("partner", { maxConcurrent: 2, maxQueue: 1 })
      const gate = yield* Deferred.make<void>()
      let running = 0
      let most = 0
      const call = Effect.gen(function*() {
        running++
        most = Math.max(most, running)
        yield* Deferred.await(gate)
        running--
      })
      const fibers = yield* Effect.forEach(Array.from({ length: 3 }), () => Effect.fork(bulkhead.execute(call)))
      yield* Effect.yieldNow()
      expect(bulkhead.stats()).toEqual({ active: 2, queued: 1 })
      const rejected = yield* Effect.flip(bulkhead.execute(call))
      expect(rejected).toBeInstanceOf(Bulkhead.BulkheadFull)
      expect(rejected.reason).toBe("queue-full")
      expect(yield* Failure.classify(rejected)).toMatchObject({ classification: "transient", category: "dependency" })
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.forEach(fibers, Fiber.join)
      expect(most).toBe(2)
      expect(bulkhead.stats()).toEqual({ active: 0, queued: 0 })
    }))

  it.effect("keys have compartments of their own", () =>
    Effect.gen(function*() {
      const bulkhead = yield* Bulkhead.make("tenants", { maxConcurrent: 1 })
      const gate = yield* Deferred.make<void>()
      const a = yield* Effect.fork(bulkhead.execute(Deferred.await(gate), "a"))
      yield* Effect.yieldNow()
      expect((yield* Effect.flip(bulkhead.execute(Effect.void, "a"))).reason).toBe("queue-full")
      yield* bulkhead.execute(Effect.void, "b")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(a)
    }))

  it.effect("a waiter gives up after maxWait; an interrupted waiter or caller gives its place and slot back", () =>
    Effect.gen(function*() {
      const bulkhead = yield* Bulkhead.make("slow", { maxConcurrent: 1, maxQueue: 2, maxWait: "1 second" })
      const gate = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(bulkhead.execute(Deferred.await(gate)))
      yield* Effect.yieldNow()
      const timedOut = yield* Effect.fork(Effect.flip(bulkhead.execute(Effect.void)))
      const interrupted = yield* Effect.fork(bulkhead.execute(Effect.void))
      yield* Effect.yieldNow()
      expect(bulkhead.stats()).toEqual({ active: 1, queued: 2 })
      yield* Fiber.interrupt(interrupted)
      expect(bulkhead.stats()).toEqual({ active: 1, queued: 1 })
      yield* TestClock.adjust(Duration.seconds(1))
      expect((yield* Fiber.join(timedOut)).reason).toBe("wait-timeout")
      expect(bulkhead.stats()).toEqual({ active: 1, queued: 0 })
      yield* Fiber.interrupt(holder)
      expect(bulkhead.stats()).toEqual({ active: 0, queued: 0 })
      expect(Exit.isSuccess(yield* Effect.exit(bulkhead.execute(Effect.succeed(1))))).toBe(true)
    }))

  it.effect("no slot and no place in the queue is left taken, whenever and whichever callers are interrupted", () =>
    Effect.gen(function*() {
      // Interruption reaches a fiber only where it yields; the calls yield between steps, and the
      // interruptions come after 0, 1, 2, ... yields of the test, so they land at every point of a call's
      // life: before it starts, queued, handed a slot, running, releasing, handing its slot on.
      const call = Effect.repeatN(Effect.yieldNow(), 2)
      const victimSets = [[0], [1], [2], [0, 1], [1, 2], [0, 2], [0, 1, 2]]
      for (const maxWait of [undefined, "1 second"] as const) {
        for (let yields = 0; yields < 16; yields++) {
          for (const victims of victimSets) {
            const bulkhead = yield* Bulkhead.make("interrupted", { maxConcurrent: 1, maxQueue: 2, ...(maxWait === undefined ? {} : { maxWait }) })
            const fibers = yield* Effect.forEach([0, 1, 2], () => Effect.fork(bulkhead.execute(call)))
            for (let i = 0; i < yields; i++) yield* Effect.yieldNow()
            yield* Effect.forEach(victims, (i) => Fiber.interruptFork(fibers[i]!), { discard: true })
            // Polled, not awaited: a leaked slot would leave the calls after it waiting for ever.
            let exits = yield* Effect.forEach(fibers, Fiber.poll)
            for (let i = 0; i < 200 && exits.some(Option.isNone); i++) {
              yield* Effect.yieldNow()
              exits = yield* Effect.forEach(fibers, Fiber.poll)
            }
            const context = { maxWait, yields, victims }
            expect({ ...context, done: exits.map(Option.isSome), stats: bulkhead.stats() })
              .toEqual({ ...context, done: [true, true, true], stats: { active: 0, queued: 0 } })
            // The compartment still admits a full complement: nothing is held by a call that is gone.
            expect(yield* bulkhead.execute(Effect.succeed("free"))).toBe("free")
          }
        }
      }
    }))

  it.effect("a queued call is handed the slot of the call before it, in arrival order", () =>
    Effect.gen(function*() {
      const bulkhead = yield* Bulkhead.make("order", { maxConcurrent: 1, maxQueue: 5 })
      const order: Array<number> = []
      yield* Effect.forEach([1, 2, 3, 4], (n) => bulkhead.execute(Effect.zipRight(Effect.yieldNow(), Effect.sync(() => order.push(n)))), {
        concurrency: "unbounded",
        discard: true
      })
      expect(order).toEqual([1, 2, 3, 4])
    }))

  it.effect("settings out of range are a typed error", () =>
    Effect.gen(function*() {
      expect((yield* Effect.flip(Bulkhead.make("bad", { maxConcurrent: 0 })))._tag).toBe("InvalidBulkhead")
    }))
})
