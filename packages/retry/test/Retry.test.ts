import { Delivery, Envelope, Failure, Handler, Pipeline } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Data, DateTime, pipe, Schedule, Duration, Effect, Exit, Fiber, Option, Random, Ref, Schema, Stream, TestClock } from "effect"
import * as Backoff from "../src/Backoff.js"
import * as Budget from "../src/Budget.js"
import * as Retry from "../src/Retry.js"

class HttpError extends Data.TaggedError("HttpError")<{ readonly status: number; readonly retryAfter?: number }> {}
class Declined extends Data.TaggedError("Declined")<{ readonly code: string }> {}

/** An effect that fails `failures` times with `error`, then succeeds with the attempt count; records call times. */
const flaky = <E>(failures: number, error: E) =>
  Effect.gen(function*() {
    const calls = yield* Ref.make<Array<number>>([])
    const effect = Effect.gen(function*() {
      const now = yield* TestClock.currentTimeMillis
      const made = yield* Ref.updateAndGet(calls, (c) => [...c, now])
      if (made.length <= failures) return yield* Effect.fail(error)
      return made.length
    })
    return { effect, calls: Ref.get(calls) }
  })

/** Forks `self`, advances the test clock by `millis`, and joins. */
const runFor = <A, E>(self: Effect.Effect<A, E>, millis: number) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(self)
    yield* TestClock.adjust(Duration.millis(millis))
    return yield* Fiber.await(fiber)
  })

describe("Retry", () => {
  it.effect("retries a transient failure on the schedule until it succeeds", () =>
    Effect.gen(function*() {
      const { effect, calls } = yield* flaky(2, new HttpError({ status: 503 }))
      const policy = Retry.policy({ schedule: Backoff.constant("1 second"), maxAttempts: 5 })
      const exit = yield* runFor(Retry.retry(policy)(effect), 10_000)
      expect(exit).toEqual(Exit.succeed(3))
      expect(yield* calls).toEqual([0, 1000, 2000])
    }))

  it.effect("the first success never touches the schedule or the clock", () =>
    Effect.gen(function*() {
      let stepped = 0
      const counting = Backoff.constant("1 second").pipe(
        (s) => ({ ...s, step: (now: number, input: unknown, state: any) => (stepped++, s.step(now, input, state)) })
      )
      const policy = Retry.policy({ schedule: counting })
      expect(yield* Retry.retry(policy)(Effect.succeed("ok"))).toBe("ok")
      expect(stepped).toBe(0)
    }))

  it.effect("a permanent failure is not retried and fails unchanged", () =>
    Effect.gen(function*() {
      const { effect, calls } = yield* flaky(5, new HttpError({ status: 400 }))
      const error = yield* Effect.flip(Retry.retry(Retry.policy({ schedule: Backoff.constant(0) }))(effect))
      expect(error).toEqual(new HttpError({ status: 400 }))
      expect((yield* calls).length).toBe(1)
    }))

  it.effect("exhaustion is a permanent RetryExhausted carrying the last error and its category", () =>
    Effect.gen(function*() {
      const { effect, calls } = yield* flaky(10, new HttpError({ status: 502 }))
      const policy = Retry.policy({ schedule: Backoff.constant("10 millis"), maxAttempts: 4 })
      const exit = yield* runFor(Effect.flip(Retry.retry(policy)(effect)), 1_000)
      expect((yield* calls).length).toBe(4)
      const error = Exit.isSuccess(exit) ? exit.value : undefined
      expect(error).toBeInstanceOf(Retry.RetryExhausted)
      const exhausted = error as Retry.RetryExhausted<HttpError>
      expect(exhausted.attempts).toBe(4)
      expect(exhausted.reason).toBe("attempts")
      expect(exhausted.lastError.status).toBe(502)
      expect(exhausted.verdict).toEqual({ classification: "transient", category: "dependency" })
      expect(yield* Failure.classify(exhausted)).toEqual({ classification: "permanent", category: "dependency" })
      expect(exhausted.message).toContain("4 attempt(s)")
    }))

  it.effect("a Retry-After hint stretches the wait, even past maxDelay, with the backoff on top", () =>
    Effect.gen(function*() {
      const { effect, calls } = yield* flaky(1, new HttpError({ status: 429, retryAfter: 5_000 }))
      const policy = Retry.policy({ schedule: Backoff.constant("10 millis"), maxDelay: "1 second" })
      const fiber = yield* Effect.fork(Retry.retry(policy)(effect))
      yield* TestClock.adjust("5009 millis")
      expect((yield* calls).length).toBe(1)
      yield* TestClock.adjust("1 millis")
      expect(yield* Fiber.join(fiber)).toBe(2)
      expect(yield* calls).toEqual([0, 5010])
    }))

  it.effect("a Retry-After HTTP date is read against the fiber's clock (TestClock here), not the wall clock", () =>
    Effect.gen(function*() {
      // TestClock starts at the epoch: five seconds later, as an HTTP date.
      const headers = { "Retry-After": new Date(5_000).toUTCString() }
      const { effect, calls } = yield* flaky(1, Object.assign(new HttpError({ status: 503 }), { headers }))
      const policy = Retry.policy({ schedule: Backoff.constant("10 millis") })
      const fiber = yield* Effect.fork(Retry.retry(policy)(effect))
      yield* TestClock.adjust("5009 millis")
      expect((yield* calls).length).toBe(1)
      yield* TestClock.adjust("1 millis")
      expect(yield* Fiber.join(fiber)).toBe(2)
      expect(yield* calls).toEqual([0, 5010])
    }))

  it.effect("callers given the same hint come back spread out by their jittered backoff, not all at once", () =>
    Effect.gen(function*() {
      const policy = Retry.policy({ schedule: Backoff.exponential({ base: "100 millis", jitter: "full" }) })
      const starts: Array<number> = []
      const caller = Effect.gen(function*() {
        const { effect, calls } = yield* flaky(1, new HttpError({ status: 503, retryAfter: 1_000 }))
        yield* Retry.retry(policy)(effect)
        starts.push((yield* calls)[1]!)
      })
      const fibers = yield* Effect.forEach(Array.from({ length: 5 }), () => Effect.fork(caller))
      yield* TestClock.adjust("2 seconds")
      yield* Effect.forEach(fibers, Fiber.join)
      expect(starts.every((t) => t >= 1000 && t < 1100)).toBe(true)
      expect(new Set(starts).size).toBeGreaterThan(1)
    }))

  it.effect("honourRetryAfter: false ignores the hint", () =>
    Effect.gen(function*() {
      const { effect, calls } = yield* flaky(1, new HttpError({ status: 429, retryAfter: 5_000 }))
      const policy = Retry.policy({ schedule: Backoff.constant("10 millis"), honourRetryAfter: false })
      expect(yield* runFor(Retry.retry(policy)(effect), 100)).toEqual(Exit.succeed(2))
      expect(yield* calls).toEqual([0, 10])
    }))

  it.effect("maxDelay caps each wait", () =>
    Effect.gen(function*() {
      const { effect, calls } = yield* flaky(3, new HttpError({ status: 500 }))
      const schedule = Backoff.exponential({ base: "1 second", factor: 10, jitter: "none" })
      const policy = Retry.policy({ schedule, maxDelay: "3 seconds", maxAttempts: 10 })
      expect(yield* runFor(Retry.retry(policy)(effect), 60_000)).toEqual(Exit.succeed(4))
      expect(yield* calls).toEqual([0, 1000, 4000, 7000])
    }))

  it.effect("maxElapsed stops retries that would start too late", () =>
    Effect.gen(function*() {
      const { effect, calls } = yield* flaky(100, new HttpError({ status: 500 }))
      const policy = Retry.policy({ schedule: Backoff.constant("1 second"), maxAttempts: 100, maxElapsed: "3500 millis" })
      const exit = yield* runFor(Effect.flip(Retry.retry(policy)(effect)), 60_000)
      expect(yield* calls).toEqual([0, 1000, 2000, 3000])
      const error = Exit.isSuccess(exit) ? exit.value : undefined
      expect(error).toMatchObject({ _tag: "RetryExhausted", reason: "elapsed", attempts: 4 })
    }))

  it.effect("a schedule that ends ends the retries", () =>
    Effect.gen(function*() {
      const { effect, calls } = yield* flaky(100, new HttpError({ status: 500 }))
      const policy = Retry.policy({ schedule: Backoff.constant(0).pipe(Schedule_recurs(2)), maxAttempts: 100 })
      const error = yield* Effect.flip(Retry.retry(policy)(effect))
      expect(error).toMatchObject({ _tag: "RetryExhausted", reason: "schedule", attempts: 3 })
      expect((yield* calls).length).toBe(3)
    }))

  it.effect("per-error overrides and user predicates decide what is retried", () =>
    Effect.gen(function*() {
      const declined = yield* flaky(1, new Declined({ code: "try_again_later" }))
      const byDefault = Retry.policy({ schedule: Backoff.constant(0), overrides: [Failure.ruleForTag("Declined", Failure.verdict("permanent", "unknown"))] })
      expect(yield* Effect.flip(Retry.retry(byDefault)(declined.effect))).toBeInstanceOf(Declined)
      const predicate = Retry.policy({
        schedule: Backoff.constant(0),
        overrides: [Failure.ruleForTag("Declined", Failure.verdict("permanent", "unknown"))],
        retryOn: (error, verdict) => verdict.classification === "transient" || (error as Declined).code === "try_again_later"
      })
      expect(yield* Retry.retry(predicate)(declined.effect)).toBe(2)
      const never = Retry.policy({ schedule: Backoff.constant(0), retryOn: () => false })
      const transient = yield* flaky(1, new HttpError({ status: 503 }))
      expect(yield* Effect.flip(Retry.retry(never)(transient.effect))).toEqual(new HttpError({ status: 503 }))
    }))

  it.effect("jitter draws from Effect's Random: a seeded Random replays the same delays", () =>
    Effect.gen(function*() {
      const delays = (seed: number) =>
        Effect.gen(function*() {
          const { effect, calls } = yield* flaky(5, new HttpError({ status: 503 }))
          const policy = Retry.policy({
            schedule: Backoff.exponential({ base: "100 millis", jitter: "decorrelated" }),
            maxAttempts: 6
          })
          yield* runFor(Retry.retry(policy)(effect).pipe(Effect.withRandom(Random.make(seed))), 600_000)
          const times = yield* calls
          return times.map((t) => t - times[0]!)
        })
      const a = yield* delays(42)
      expect(a.length).toBe(6)
      expect(yield* delays(42)).toEqual(a)
      expect(yield* delays(7)).not.toEqual(a)
    }))
})

describe("Budget", () => {
  it.effect("a retry that does not fit in what is left of the budget is not made", () =>
    Effect.gen(function*() {
      const { effect, calls } = yield* flaky(100, new HttpError({ status: 503 }))
      const policy = Retry.policy({ schedule: Backoff.constant("400 millis"), maxAttempts: 10 })
      const exit = yield* runFor(Effect.flip(Retry.retry(policy)(effect).pipe(Budget.withBudget("1 second"))), 60_000)
      expect(yield* calls).toEqual([0, 400, 800])
      const error = Exit.isSuccess(exit) ? exit.value : undefined
      expect(error).toBeInstanceOf(Budget.BudgetExhausted)
      const exhausted = error as Budget.BudgetExhausted<HttpError>
      expect(exhausted).toMatchObject({ deadline: 1000, attempts: 3 })
      expect(Duration.toMillis(exhausted.remaining)).toBe(200)
      expect(Duration.toMillis(exhausted.needed!)).toBe(400)
      expect(exhausted.lastError?.status).toBe(503)
      expect(yield* Failure.classify(exhausted)).toEqual({ classification: "permanent", category: "timeout" })
    }))

  it.effect("nested budgets only shrink; time spent by nested calls is spent from the outer budget", () =>
    Effect.gen(function*() {
      const inner = Budget.withBudget(Budget.deadline, "10 seconds")
      expect(yield* inner.pipe(Budget.withBudget("2 seconds"))).toEqual(Option.some(2000))
      expect(yield* Budget.deadline.pipe(Budget.withBudget("1 second"), Budget.withBudget("5 seconds"))).toEqual(Option.some(1000))
      const fiber = yield* Effect.fork(
        Effect.gen(function*() {
          yield* Effect.sleep("700 millis")
          return yield* Budget.remaining
        }).pipe(Budget.withBudget("1 second"))
      )
      yield* TestClock.adjust("1 second")
      expect(Option.map(yield* Fiber.join(fiber), Duration.toMillis)).toEqual(Option.some(300))
      expect(yield* Budget.remaining).toEqual(Option.none())
    }))

  it.effect("bounded interrupts a nested call at the deadline and refuses one with nothing left", () =>
    Effect.gen(function*() {
      const slow = Effect.sleep("5 seconds").pipe(Effect.as("done"))
      const exit = yield* runFor(Budget.bounded(slow).pipe(Budget.withBudget("1 second")), 10_000)
      expect(Exit.isFailure(exit) && JSON.stringify(exit.cause)).toContain("BudgetExhausted")
      expect(yield* Budget.bounded(Effect.succeed(1))).toBe(1)
      const late = yield* Effect.flip(Budget.bounded(Effect.succeed(1)).pipe(Budget.withDeadline(0)))
      expect(late).toBeInstanceOf(Budget.BudgetExhausted)
    }))

  it.effect("the deadline travels in the bulwark-deadline header and is adopted by the consumer", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000_000)
      const envelope = yield* Envelope.make({ type: "t", source: "s", subject: "k", data: 1 })
      expect(yield* Budget.stamp(envelope)).toBe(envelope)
      const stamped = yield* Budget.stamp(envelope).pipe(Budget.withBudget("30 seconds"))
      expect(stamped.headers[Envelope.HeaderNames.deadline]).toBe("1030000")
      expect(Envelope.causedBy(stamped)[Envelope.HeaderNames.deadline]).toBe("1030000")

      const seen = yield* Ref.make<Option.Option<number>>(Option.none())
      const handler = Budget.middleware((_: Envelope.Envelope<number>) => Effect.flatMap(Budget.deadline, (d) => Ref.set(seen, d)))
      yield* handler(stamped)
      expect(yield* Ref.get(seen)).toEqual(Option.some(1_030_000))

      yield* TestClock.adjust("30 seconds")
      expect(yield* Effect.flip(handler(stamped))).toBeInstanceOf(Budget.BudgetExhausted)
      const broken = Envelope.withHeaders(envelope, { [Envelope.HeaderNames.deadline]: "tomorrow" })
      const invalid = yield* Effect.flip(handler(broken))
      expect(invalid).toBeInstanceOf(Budget.InvalidDeadlineHeader)
      expect(yield* Failure.classify(invalid)).toEqual({ classification: "permanent", category: "schema" })
      yield* handler(envelope)
      expect(yield* Ref.get(seen)).toEqual(Option.none())
    }))
})

describe("Retry.middleware", () => {
  const envelope = (attempt: number): Envelope.Envelope<string> => ({
    id: "evt-1",
    type: "t",
    source: "s",
    subject: "k",
    time: DateTime.unsafeMake(0),
    data: "x",
    headers: {},
    attempt
  })

  it.effect("records the attempt on the envelope and on the attempt's span", () =>
    Effect.gen(function*() {
      const seen = yield* Ref.make<Array<[number, unknown]>>([])
      const handler: Handler.Handler<string, HttpError> = (env) =>
        Effect.gen(function*() {
          const span = yield* Effect.orDie(Effect.currentSpan)
          const made = yield* Ref.updateAndGet(seen, (s) => [...s, [env.attempt, span.attributes.get("bulwark.retry.attempt")] as [number, unknown]])
          if (made.length < 3) return yield* Effect.fail(new HttpError({ status: 503 }))
        })
      const wrapped = Retry.middleware(Retry.policy({ schedule: Backoff.constant(0), maxAttempts: 5 }))(handler)
      expect(Handler.stagesOf(wrapped)).toEqual(["retry"])
      yield* wrapped(envelope(2))
      expect(yield* Ref.get(seen)).toEqual([[2, 1], [3, 2], [4, 3]])
    }))

  it.effect("in the canonical order; exhaustion dead-letters with the last error's category", () =>
    Effect.gen(function*() {
      const settled = yield* Ref.make<Array<Delivery.DeadLetterReason | string>>([])
      const schema = Schema.String
      const payload = yield* Envelope.encode(schema)(envelope(1))
      const delivery: Delivery.Delivery = {
        message: { id: "evt-1", topic: "orders", key: "k", payload, headers: {} },
        attempt: 1,
        ack: Ref.update(settled, (s) => [...s, "ack"]),
        nack: () => Ref.update(settled, (s) => [...s, "nack"]),
        deadLetter: (reason) => Ref.update(settled, (s) => [...s, reason])
      }
      const failing: Handler.Handler<string, HttpError> = () => Effect.fail(new HttpError({ status: 503 }))
      const handler = pipe(
        failing,
        Handler.timeout("1 second"),
        Retry.middleware(Retry.policy({ schedule: Backoff.constant(0), maxAttempts: 3 }))
      )
      expect(Handler.stagesOf(handler)).toEqual(["timeout", "retry"])
      yield* Pipeline.run(Stream.make(delivery), handler, { schema })
      const [reason] = yield* Ref.get(settled)
      expect(reason).toBeInstanceOf(Delivery.DeadLetterReason)
      const dead = reason as Delivery.DeadLetterReason
      expect(dead.category).toBe("dependency")
      expect(dead.error).toMatchObject({ tag: "RetryExhausted", classification: "permanent", category: "dependency" })
      expect(dead.error.message).toContain("3 attempt(s)")
    }))
})

const Schedule_recurs = (n: number) => <Out, In, R>(self: Schedule.Schedule<Out, In, R>) =>
  Schedule.intersect(self, Schedule.recurs(n))
