import { describe, expect, it } from "@effect/vitest"
import { Retry } from "@bulwark/retry"
import { Data, Duration, Effect, Fiber, Ref, Schedule, TestClock } from "effect"
import * as Hedge from "../src/Hedge.js"
import * as RetryBudget from "../src/RetryBudget.js"

class Down extends Data.TaggedError("Down")<{ readonly copy: number }> {}

// A downstream whose n-th call answers after `latency[n]` (or fails when negative), counting the effects it
// applied per key: a hedge whose loser is interrupted applies one.
const downstream = (latency: ReadonlyArray<number>) =>
  Effect.gen(function*() {
    const calls = yield* Ref.make(0)
    const interrupted = yield* Ref.make(0)
    const applied = new Map<string, number>()
    const call = (key: string) =>
      Effect.flatMap(Ref.getAndUpdate(calls, (n) => n + 1), (n) => {
        const ms = latency[n] ?? 0
        return Effect.sleep(Duration.millis(Math.abs(ms))).pipe(
          Effect.zipRight(ms < 0 ? Effect.fail(new Down({ copy: n })) : Effect.sync(() => {
            applied.set(key, (applied.get(key) ?? 0) + 1)
            return n
          })),
          Effect.onInterrupt(() => Ref.update(interrupted, (i) => i + 1))
        )
      })
    return { call, calls, interrupted, applied }
  })

describe("Hedge", () => {
  it.effect("a slow first copy is hedged after the delay; the first success wins and the loser is interrupted", () =>
    Effect.gen(function*() {
      const d = yield* downstream([1_000, 50])
      const fiber = yield* Effect.fork(Hedge.hedge({ delay: "100 millis" })(d.call("order-1")))
      yield* TestClock.adjust(Duration.millis(150))
      expect(yield* Fiber.join(fiber)).toBe(1)
      expect(yield* Ref.get(d.calls)).toBe(2)
      expect(yield* Ref.get(d.interrupted)).toBe(1)
      expect(d.applied.get("order-1")).toBe(1)
    }))

  it.effect("a fast first copy sends no hedge", () =>
    Effect.gen(function*() {
      const d = yield* downstream([10])
      const fiber = yield* Effect.fork(Hedge.hedge({ delay: "100 millis", maxHedges: 3 })(d.call("k")))
      yield* TestClock.adjust(Duration.millis(500))
      expect(yield* Fiber.join(fiber)).toBe(0)
      expect(yield* Ref.get(d.calls)).toBe(1)
    }))

  it.effect("a failed copy is hedged at once; when every copy fails, the last failure is the call's", () =>
    Effect.gen(function*() {
      const d = yield* downstream([-10, -20, -30])
      const fiber = yield* Effect.fork(Effect.flip(Hedge.hedge({ delay: "1 second", maxHedges: 2 })(d.call("k"))))
      yield* TestClock.adjust(Duration.millis(100))
      const error = yield* Fiber.join(fiber)
      expect(error).toEqual(new Down({ copy: 2 }))
      expect(yield* Ref.get(d.calls)).toBe(3)
    }))

  it.effect("hedges spend from the retry budget: a spent budget sends none", () =>
    Effect.gen(function*() {
      const budget = RetryBudget.make("tight", { ratio: 0, minPerSecond: 0.1, windowSeconds: 10 })
      // The budget allows one extra attempt in its window: the first call may hedge, the second may not.
      const first = yield* downstream([1_000, 10])
      const a = yield* Effect.fork(Hedge.hedge({ delay: "100 millis", budget })(first.call("a")))
      yield* TestClock.adjust(Duration.millis(200))
      expect(yield* Fiber.join(a)).toBe(1)
      const second = yield* downstream([1_000, 10])
      const b = yield* Effect.fork(Hedge.hedge({ delay: "100 millis", budget })(second.call("b")))
      yield* TestClock.adjust(Duration.millis(1_000))
      expect(yield* Fiber.join(b)).toBe(0)
      expect(yield* Ref.get(second.calls)).toBe(1)
    }))

  it.effect("the budget's ratio: calls made earn extra attempts", () =>
    Effect.gen(function*() {
      const budget = RetryBudget.make("ratio", { ratio: 0.5, minPerSecond: 0 })
      for (let i = 0; i < 4; i++) yield* RetryBudget.deposit(budget)
      expect(yield* RetryBudget.tryWithdraw(budget)).toBe(true)
      expect(yield* RetryBudget.tryWithdraw(budget)).toBe(true)
      expect(yield* RetryBudget.tryWithdraw(budget)).toBe(false)
    }))

  it.effect("retries spend the budget at the fiber's clock: under virtual time the calls made earn retries as they do live", () =>
    Effect.gen(function*() {
      // TestClock starts at 0: a withdrawal read off the wall clock would land years after these deposits, find
      // them outside the window and refuse every retry.
      const budget = RetryBudget.make("virtual", { ratio: 0.5, minPerSecond: 0, windowSeconds: 10 })
      let calls = 0
      const flaky = Effect.suspend(() => ++calls % 3 === 0 ? Effect.succeed(calls) : Effect.fail(new Down({ copy: calls })))
      const policy = Retry.policy({
        maxAttempts: 3,
        schedule: Schedule.spaced("10 millis"),
        retryOn: RetryBudget.retryOn(budget, (error) => error instanceof Down)
      })
      for (let i = 0; i < 4; i++) yield* RetryBudget.deposit(budget)
      const fiber = yield* Effect.fork(RetryBudget.counted(budget)(Retry.retry(policy)(flaky)))
      yield* TestClock.adjust(Duration.millis(100))
      // 5 calls earn 2.5 retries: both retries this call needed were allowed.
      expect(yield* Fiber.join(fiber)).toBe(3)
      expect(yield* RetryBudget.tryWithdraw(budget)).toBe(false)
    }))
})
