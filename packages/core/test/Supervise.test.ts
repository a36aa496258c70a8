import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Logger, LogLevel, Metric, TestClock } from "effect"
import * as Failure from "../src/Failure.js"
import * as Supervise from "../src/Supervise.js"

const capture = () => {
  const lines: Array<{ readonly level: string; readonly message: string }> = []
  const logger = Logger.make(({ logLevel, message }) => {
    lines.push({ level: logLevel.label, message: String(Array.isArray(message) ? message[0] : message) })
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

describe("Supervise", () => {
  it.effect("a transient fault restarts the loop with backoff, logs once per state change, and reports health", () => {
    const { layer, lines } = capture()
    return Effect.gen(function*() {
      let attempts = 0
      const fiber = yield* Supervise.run({ name: "test-loop-transient", backoffBase: "100 millis", backoffMax: "1 second" }, (supervisor) =>
        Effect.suspend(() => {
          attempts++
          return attempts <= 5
            ? Effect.fail(new Failure.TransientError({ category: "dependency", message: "database down" }))
            : Effect.zipRight(supervisor.up, Effect.succeed("done" as const))
        })).pipe(Effect.fork)
      yield* TestClock.adjust("100 millis")
      expect((yield* Supervise.health).get("test-loop-transient")).toBe("degraded")
      // Capped at 1 s: five faults back off at most 0.1 + 0.2 + 0.4 + 0.8 + 1 s.
      yield* TestClock.adjust("3 seconds")
      expect(yield* Fiber.join(fiber)).toBe("done")
      expect(attempts).toBe(6)
      const mine = lines.filter((l) => l.message.startsWith("test-loop-transient"))
      expect(mine.map((l) => l.level)).toEqual(["WARN", "INFO"])
      expect(mine[1]!.message).toMatch(/recovered after 5 fault/)
      // A loop that ended leaves the registry.
      expect((yield* Supervise.health).has("test-loop-transient")).toBe(false)
      const faults = yield* Metric.value(Metric.tagged(Supervise.faultsTotal, "loop", "test-loop-transient"))
      expect(faults.count).toBe(5)
    }).pipe(Effect.provide(layer))
  })

  it.effect("a defect ends the loop loudly: logged at Fatal, `failed` in health, the cause is the result", () => {
    const { layer, lines } = capture()
    return Effect.gen(function*() {
      let attempts = 0
      const exit = yield* Supervise.run({ name: "test-loop-fatal" }, () =>
        Effect.suspend(() => {
          attempts++
          return Effect.die(new Error("bug"))
        })).pipe(Effect.exit)
      expect(attempts).toBe(1)
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
      expect(lines.filter((l) => l.level === "FATAL").map((l) => l.message)).toEqual([
        "test-loop-fatal: stopped by a fatal fault; it will not restart"
      ])
      expect((yield* Supervise.health).get("test-loop-fatal")).toBe("failed")
    }).pipe(Effect.provide(layer))
  })

  it.effect("a permanent failure is fatal too; `isTransient` chooses which failures restart", () =>
    Effect.gen(function*() {
      const permanent = yield* Supervise.run({ name: "test-loop-permanent" }, () =>
        Effect.fail(new Failure.PermanentError({ category: "auth", message: "bad password" }))).pipe(Effect.flip)
      expect(permanent._tag).toBe("PermanentError")
      const chosen = yield* Supervise.run({ name: "test-loop-chosen", isTransient: () => false }, () =>
        Effect.fail(new Failure.TransientError({ category: "dependency", message: "not mine to retry" }))).pipe(Effect.flip)
      expect(chosen._tag).toBe("TransientError")
    }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none))))

  it("backoff doubles and is capped", () => {
    expect([1, 2, 3, 4, 5, 40].map((n) => Supervise.backoffMillis(100, 1000, n))).toEqual([100, 200, 400, 800, 1000, 1000])
  })

  it.effect("interruption is not a fault", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(Supervise.run({ name: "test-loop-interrupted" }, () => Effect.never))
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(fiber)
      expect((yield* Supervise.health).has("test-loop-interrupted")).toBe(false)
    }).pipe(Logger.withMinimumLogLevel(LogLevel.None)))

  it.effect("changes logs a side task's state changes only, not every attempt", () => {
    const { layer, lines } = capture()
    return Effect.gen(function*() {
      const log = Supervise.changes("heartbeat failed")
      for (const outcome of ["ok", "fail", "fail", "fail", "ok", "ok", "fail", "ok"]) {
        yield* outcome === "ok" ? log.ok : log.failed(new Error("down"))
      }
      expect(lines.map((l) => `${l.level} ${l.message}`)).toEqual([
        "WARN heartbeat failed",
        "INFO heartbeat failed: works again",
        "WARN heartbeat failed",
        "INFO heartbeat failed: works again"
      ])
    }).pipe(Effect.provide(layer))
  })

  it.effect("loops sharing a name: the name shows the worst state, and stays while one of them runs", () =>
    Effect.gen(function*() {
      const a = yield* Supervise.make({ name: "test-shared", backoffBase: "10 millis" })
      const b = yield* Supervise.make({ name: "test-shared", backoffBase: "10 millis" })
      const degrading = yield* Effect.fork(b.degraded(new Error("down")))
      yield* TestClock.adjust("10 millis")
      yield* Fiber.join(degrading)
      expect((yield* Supervise.health).get("test-shared")).toBe("degraded")
      yield* b.release
      expect((yield* Supervise.health).get("test-shared")).toBe("up")
      yield* a.release
      expect((yield* Supervise.health).has("test-shared")).toBe(false)
    }).pipe(Logger.withMinimumLogLevel(LogLevel.None)))
})
