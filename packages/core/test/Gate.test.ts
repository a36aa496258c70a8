import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Ref } from "effect"
import * as Gate from "../src/internal/gate.js"

// The frames a fiber holds: FiberRuntime keeps its continuation stack in `_stack` (not public API, but it is
// exactly the structure that grew, so it is what this test bounds).
const stackDepth = (fiber: Fiber.RuntimeFiber<unknown, unknown>): number =>
  (fiber as unknown as { readonly _stack: ReadonlyArray<unknown> })._stack.length

describe("Gate (the ordered pipeline's handler slots)", () => {
  it.live("fibers contending for few permits keep flat stacks however many times they wait", () =>
    Effect.gen(function*() {
      const gate = Gate.make(4)
      // Forty workers, four slots, each worker waiting 40 times: with Effect's Semaphore every release woke
      // all waiters to race for the permit, and each loser nested its next wait inside the previous one, so
      // a worker's stack (and everything its old waits referenced) grew with every lost race.
      const workers = yield* Effect.forEach(
        Array.from({ length: 40 }, (_, i) => i),
        () => Effect.fork(Effect.forEach(Array.from({ length: 40 }, (_, i) => i), () => gate.withPermit(Effect.sleep("1 millis")), { discard: true })),
      )
      let deepest = 0
      while (workers.some((fiber) => fiber.unsafePoll() === null)) {
        for (const fiber of workers) deepest = Math.max(deepest, stackDepth(fiber))
        yield* Effect.yieldNow()
      }
      yield* Fiber.joinAll(workers)
      expect(deepest).toBeLessThan(50)
      expect(gate.waiting()).toBe(0)
    }))

  it.live("a waiter is served before anyone who asks after it (no barging)", () =>
    Effect.gen(function*() {
      const gate = Gate.make(1)
      const order = yield* Ref.make<ReadonlyArray<string>>([])
      const hold = yield* Effect.fork(gate.withPermit(Effect.never))
      yield* Effect.yieldNow()
      const waiter = yield* Effect.fork(gate.withPermit(Ref.update(order, (o) => [...o, "waiter"])))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(hold)
      // Asks right after the release, before the waiter had a chance to run.
      yield* gate.withPermit(Ref.update(order, (o) => [...o, "late"]))
      yield* Fiber.join(waiter)
      expect(yield* Ref.get(order)).toEqual(["waiter", "late"])
    }))

  it.live("an interrupted waiter leaves the queue; a permit granted to it as it is interrupted is passed on", () =>
    Effect.gen(function*() {
      const gate = Gate.make(1)
      const hold = yield* Effect.fork(gate.withPermit(Effect.never))
      yield* Effect.yieldNow()
      const quitter = yield* Effect.fork(gate.withPermit(Effect.void))
      const stayer = yield* Effect.fork(gate.withPermit(Effect.succeed("ran")))
      yield* Effect.yieldNow()
      expect(gate.waiting()).toBe(2)
      yield* Fiber.interrupt(quitter)
      expect(gate.waiting()).toBe(1)
      yield* Fiber.interrupt(hold)
      expect(yield* Fiber.join(stayer)).toBe("ran")
      // The permit is back: a new holder gets it at once.
      expect(yield* Effect.timeout(gate.withPermit(Effect.succeed(1)), "1 second")).toBe(1)
    }))
})
