import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, Fiber, Random } from "effect"
import { epoch, runProgram, VirtualScheduler } from "../src/Scheduler.js"

describe("VirtualScheduler", () => {
  it("fires timed events in time order, ties in registration order", () => {
    const scheduler = new VirtualScheduler()
    const fired: Array<string> = []
    scheduler.schedule(20, () => fired.push("b@20"))
    scheduler.schedule(10, () => fired.push("a@10"))
    scheduler.schedule(20, () => fired.push("c@20"))
    const cancelled = scheduler.schedule(15, () => fired.push("cancelled"))
    scheduler.cancel(cancelled)
    scheduler.run(Infinity)
    expect(fired).toEqual(["a@10", "b@20", "c@20"])
    expect(scheduler.now).toBe(20)
  })

  it("runs an hour of Effect sleeps in virtual time, with the clock reading virtual time", () => {
    const scheduler = new VirtualScheduler()
    const program = Effect.gen(function*() {
      const before = yield* Clock.currentTimeMillis
      yield* Effect.sleep(Duration.hours(1))
      const after = yield* Clock.currentTimeMillis
      return [before, after] as const
    })
    const result = runProgram(scheduler, program, { seed: 1, until: Infinity })
    expect(result.exit?._tag).toBe("Success")
    if (result.exit?._tag === "Success") expect(result.exit.value).toEqual([epoch, epoch + 3_600_000])
    expect(scheduler.now).toBe(3_600_000)
  })

  it("interleaves concurrent fibers by the generated choices, deterministically", () => {
    const orderWith = (choices: ReadonlyArray<number>) => {
      const scheduler = new VirtualScheduler(choices)
      const order: Array<number> = []
      const program = Effect.forEach([0, 1, 2, 3], (i) =>
        Effect.zipRight(Effect.sleep(Duration.millis(5)), Effect.sync(() => order.push(i))), { concurrency: "unbounded", discard: true })
      runProgram(scheduler, program, { seed: 1, until: Infinity })
      return order
    }
    expect(orderWith([])).toEqual([0, 1, 2, 3])
    expect(orderWith([3, 0, 1])).toEqual(orderWith([3, 0, 1]))
    expect(orderWith([3, 0, 1])).not.toEqual([0, 1, 2, 3])
  })

  it("seeds Random, so ids repeat for a seed and differ across seeds", () => {
    const draw = (seed: number) => {
      const result = runProgram(new VirtualScheduler(), Effect.all([Random.nextInt, Random.nextInt]), { seed, until: Infinity })
      return result.exit?._tag === "Success" ? result.exit.value : undefined
    }
    expect(draw(7)).toEqual(draw(7))
    expect(draw(7)).not.toEqual(draw(8))
  })

  it("interrupts what is still blocked at the deadline and reports no exit", () => {
    const scheduler = new VirtualScheduler()
    const program = Effect.gen(function*() {
      const never = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(Deferred.await(never))
      yield* Fiber.join(fiber)
    })
    const result = runProgram(scheduler, Effect.zipRight(Effect.sleep(Duration.seconds(5)), program), { seed: 1, until: 10_000 })
    expect(result.exit).toBeUndefined()
    expect(result.now).toBe(5_000)
  })
})
