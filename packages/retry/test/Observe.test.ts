import { Envelope, Observe } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Data, Duration, Effect, Fiber, Schedule, TestClock } from "effect"
import * as Backoff from "../src/Backoff.js"
import * as Budget from "../src/Budget.js"
import * as Retry from "../src/Retry.js"

class HttpError extends Data.TaggedError("HttpError")<{ readonly status: number }> {}

/** Forks `self` with `observer`, advances the test clock by `millis`, and awaits it. */
const runFor = <A, E>(self: Effect.Effect<A, E>, millis: number, observer: Observe.Observer) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Observe.observe(observer)(self))
    yield* TestClock.adjust(Duration.millis(millis))
    return yield* Fiber.await(fiber)
  })

describe("Retry events", () => {
  it.effect("each retry is announced as it starts, after its wait, numbered 2..n; then exhausted", () =>
    Effect.gen(function*() {
      const log: Array<string> = []
      const attempt = Effect.flatMap(Clock.currentTimeMillis, (now) => {
        log.push(`attempt@${now}`)
        return Effect.fail(new HttpError({ status: 503 }))
      })
      const events: Array<Observe.Event> = []
      const policy = Retry.policy({ schedule: Backoff.exponential({ base: "100 millis", jitter: "none" }), maxAttempts: 4 })
      yield* runFor(Retry.retry(policy)(attempt), 10_000, (event) => {
        events.push(event)
        log.push(`${event.kind}${event.kind === "retry" ? `:${event.attributes.attempt}` : ""}`)
      })
      expect(log).toEqual([
        "attempt@0",
        "retry:2",
        "attempt@100",
        "retry:3",
        "attempt@300",
        "retry:4",
        "attempt@700",
        "exhausted"
      ])
      expect(events.map((e) => e.source)).toEqual(["retry", "retry", "retry", "retry"])
      expect(events.filter((e) => e.kind === "retry").map((e) => e.attributes)).toEqual([
        { attempt: 2, delayMs: 100, category: "dependency", envelopeId: undefined, subject: undefined },
        { attempt: 3, delayMs: 200, category: "dependency", envelopeId: undefined, subject: undefined },
        { attempt: 4, delayMs: 400, category: "dependency", envelopeId: undefined, subject: undefined }
      ])
      expect(events[3]!.attributes).toMatchObject({ attempts: 4, reason: "attempts", category: "dependency" })
    }))

  it.effect("the middleware names the envelope; a permanent failure is not-retried", () =>
    Effect.gen(function*() {
      const envelope = yield* Envelope.make({ id: "evt-1", type: "t", source: "/s", subject: "order-7", data: {} })
      const events: Array<Observe.Event> = []
      const policy = Retry.policy({ schedule: Backoff.constant("1 second"), maxAttempts: 3 })
      let calls = 0
      const flaky = Retry.middleware(policy)((_: Envelope.Envelope<{}>) =>
        ++calls < 3 ? Effect.fail(new HttpError({ status: 503 })) : Effect.void
      )
      yield* runFor(flaky(envelope), 5_000, (event) => void events.push(event))
      expect(events.map((e) => [e.kind, e.attributes.attempt, e.attributes.envelopeId, e.attributes.subject])).toEqual([
        ["retry", 2, "evt-1", "order-7"],
        ["retry", 3, "evt-1", "order-7"]
      ])

      events.length = 0
      const refused = Retry.middleware(policy)((_: Envelope.Envelope<{}>) => Effect.fail(new HttpError({ status: 422 })))
      yield* runFor(refused(envelope), 5_000, (event) => void events.push(event))
      expect(events).toEqual([{
        source: "retry",
        kind: "not-retried",
        attributes: { classification: "permanent", category: "unknown", envelopeId: "evt-1", subject: "order-7" }
      }])
    }))

  it.effect("a retry that would overrun the deadline is announced as budget-exhausted", () =>
    Effect.gen(function*() {
      const events: Array<Observe.Event> = []
      const policy = Retry.policy({ schedule: Backoff.constant("1 second"), maxAttempts: 10 })
      const exit = yield* runFor(
        Budget.withBudget(Retry.retry(policy)(Effect.fail(new HttpError({ status: 503 }))), "2500 millis"),
        10_000,
        (event) => void events.push(event)
      )
      expect(exit._tag).toBe("Failure")
      expect(events.map((e) => e.kind)).toEqual(["retry", "retry", "budget-exhausted"])
      expect(events[2]!.attributes).toMatchObject({ attempts: 3, delayMs: 1000 })
    }))

  it.effect("elapsed and schedule exhaustion carry their reason", () =>
    Effect.gen(function*() {
      const events: Array<Observe.Event> = []
      const failing = Effect.fail(new HttpError({ status: 503 }))
      const elapsed = Retry.policy({ schedule: Backoff.constant("1 second"), maxAttempts: 10, maxElapsed: "1500 millis" })
      yield* runFor(Retry.retry(elapsed)(failing), 10_000, (event) => void events.push(event))
      const short = Retry.policy({ schedule: Schedule.intersect(Schedule.spaced("1 second"), Schedule.recurs(1)), maxAttempts: 10 })
      yield* runFor(Retry.retry(short)(failing), 10_000, (event) => void events.push(event))
      expect(events.filter((e) => e.kind === "exhausted").map((e) => [e.attributes.reason, e.attributes.attempts])).toEqual([
        ["elapsed", 2],
        ["schedule", 2]
      ])
    }))

  it.effect("a success on the first attempt emits nothing", () =>
    Effect.gen(function*() {
      const events: Array<Observe.Event> = []
      yield* runFor(Retry.retry(Retry.policy())(Effect.void), 0, (event) => void events.push(event))
      expect(events).toEqual([])
    }))
})
