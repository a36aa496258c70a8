/**
 * Retry policies: *what* is retried (the failure's classification, user predicates, per-error overrides) and
 * *how* (an Effect `Schedule`, capped on attempts, on each delay and on total elapsed time), spending from the
 * caller's deadline {@link Budget}.
 *
 * A failure that is not retryable fails unchanged. When the policy gives up, the result is a
 * {@link RetryExhausted} that carries the last error and classifies itself as *permanent* with the last
 * error's category, so the pipeline's dead-letter path files it under the right category instead of
 * redelivering it. A retry whose delay would overrun the budget is not made: {@link Budget.BudgetExhausted}.
 */
import { Envelope, Failure, Handler, Observe, Telemetry } from "@bulwark/core"
import { Clock, Context, Data, Duration, Effect, FiberRef, Metric, Option, Schedule, ScheduleDecision } from "effect"
import * as Intervals from "effect/ScheduleIntervals"
import * as Backoff from "./Backoff.js"
import * as Budget from "./Budget.js"

/** Decides whether one failure is retried, given its verdict and the fiber's clock (virtual under the simulator). */
export type RetryPredicate = (error: unknown, verdict: Failure.Verdict, now: number) => boolean

/** Why a policy gave up. */
export type ExhaustionReason = "attempts" | "schedule" | "elapsed"

/** Settings of {@link policy}; every field has a default. */
export interface PolicyOptions<R = never> {
  /** How long to wait before each retry. Default: 100 ms doubling to 10 s, full jitter ({@link Backoff.defaultBackoff}). */
  readonly schedule?: Schedule.Schedule<unknown, unknown, R>
  /** Attempts in total, the first included. Default 3. */
  readonly maxAttempts?: number
  /** No single wait is longer than this (a `Retry-After` hint may still ask for longer). Default: no cap. */
  readonly maxDelay?: Duration.DurationInput
  /** No retry is started that would begin later than this after the first failure. Default: no cap. */
  readonly maxElapsed?: Duration.DurationInput
  /** Whether a failure is retried. Default: its verdict is `transient`. */
  readonly retryOn?: RetryPredicate
  /** Classification rules consulted first, for this policy only (per-error overrides). */
  readonly overrides?: ReadonlyArray<Failure.Rule>
  /** Wait at least as long as a failure's `retryAfter` hint (HTTP 429/503 `Retry-After`). Default true. */
  readonly honourRetryAfter?: boolean
}

/** A resolved retry policy. */
export interface Policy<R = never> {
  readonly schedule: Schedule.Schedule<unknown, unknown, R>
  readonly maxAttempts: number
  readonly maxDelayMillis: number | undefined
  readonly maxElapsedMillis: number | undefined
  readonly retryOn: RetryPredicate
  readonly overrides: ReadonlyArray<Failure.Rule>
  readonly honourRetryAfter: boolean
}

/** Retries transient failures only: the default of {@link PolicyOptions.retryOn}. */
export const transientOnly: RetryPredicate = (_error, verdict) => verdict.classification === "transient"

/** Builds a policy, filling in the defaults. */
export const policy = <R = never>(options: PolicyOptions<R> = {}): Policy<R> => ({
  schedule: options.schedule ?? (Backoff.defaultBackoff as Schedule.Schedule<unknown, unknown, R>),
  maxAttempts: Math.max(1, Math.floor(options.maxAttempts ?? 3)),
  maxDelayMillis: options.maxDelay === undefined ? undefined : Duration.toMillis(options.maxDelay),
  maxElapsedMillis: options.maxElapsed === undefined ? undefined : Duration.toMillis(options.maxElapsed),
  retryOn: options.retryOn ?? transientOnly,
  overrides: options.overrides ?? [],
  honourRetryAfter: options.honourRetryAfter ?? true
})

/**
 * The policy gave up: attempts, schedule or elapsed time ran out. Permanent, with the last error's category,
 * so the dead-letter path records why the message failed rather than "retry".
 */
export class RetryExhausted<E = unknown> extends Data.TaggedError("RetryExhausted")<{
  readonly lastError: E
  readonly verdict: Failure.Verdict
  /** Attempts made, the first included. */
  readonly attempts: number
  readonly reason: ExhaustionReason
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: this.verdict.category }
  }
  override get message(): string {
    const last = this.lastError instanceof Error || (typeof this.lastError === "object" && this.lastError !== null &&
        "message" in this.lastError)
      ? String((this.lastError as { message: unknown }).message)
      : String(this.lastError)
    return `gave up after ${this.attempts} attempt(s) (${this.reason}); last ${this.verdict.category} failure: ${last}`
  }
}

/**
 * The policy's verdict on a failure (its overrides first, then the fiber's rules) and the fiber's observers,
 * read in one runtime step: this runs once per failed attempt, where every step counts.
 */
const judge = (
  policy: Policy<any>,
  error: unknown
): Effect.Effect<readonly [Failure.Verdict, ReadonlyArray<Observe.Observer>, number]> =>
  Effect.withFiberRuntime((fiber) => {
    const rules = fiber.getFiberRef(Failure.currentRules)
    // At the fiber's clock (virtual under TestClock and the simulator), which a Retry-After date is read against.
    const now = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis()
    const verdict = Failure.classifyWith(policy.overrides.length === 0 ? rules : [...policy.overrides, ...rules], error, now)
    return Effect.succeed([verdict, fiber.getFiberRef(Observe.currentObservers), now] as const)
  })

/** Retries made by {@link retryWith} (and so by the middleware), by failure category. */
export const retriesTotal = Metric.counter("bulwark_retries_total", {
  description: "Retries made after a failed attempt, by failure category",
  incremental: true
})

const spanEvent = (attributes: Record<string, unknown>): Effect.Effect<void> => Telemetry.spanEvent("bulwark.retry", attributes)

/** The message being retried, when the middleware retries one (its envelope: no allocation per call). */
interface Subject {
  readonly id: string
  readonly subject: string
}

// The events are built by small functions outside the retry loop's generator, so the loop stays the code it
// was and an unobserved failure pays only a length check per event.
const notRetried = (observers: ReadonlyArray<Observe.Observer>, about: Subject | undefined, verdict: Failure.Verdict) =>
  Observe.unsafeNotify(observers, "retry", "not-retried", {
    classification: verdict.classification,
    category: verdict.category,
    envelopeId: about?.id,
    subject: about?.subject
  })

/** `retry` (attempt n starts, after its wait) or `budget-exhausted` (n − 1 made, the next would overrun). */
const announce = (
  observers: ReadonlyArray<Observe.Observer>,
  kind: "retry" | "budget-exhausted",
  about: Subject | undefined,
  verdict: Failure.Verdict,
  attempts: number,
  delayMs: number
) =>
  Observe.unsafeNotify(observers, "retry", kind, {
    ...(kind === "retry" ? { attempt: attempts } : { attempts }),
    delayMs,
    category: verdict.category,
    envelopeId: about?.id,
    subject: about?.subject
  })

/** Gives up: announces `exhausted` to the observers read for this call, then fails with {@link RetryExhausted}. */
const exhausted = <E>(
  observers: ReadonlyArray<Observe.Observer>,
  about: Subject | undefined,
  lastError: E,
  verdict: Failure.Verdict,
  attempts: number,
  reason: ExhaustionReason
): Effect.Effect<never, RetryExhausted<E>> => {
  if (observers.length !== 0) {
    Observe.unsafeNotify(observers, "retry", "exhausted", {
      attempts,
      reason,
      category: verdict.category,
      envelopeId: about?.id,
      subject: about?.subject
    })
  }
  return Effect.fail(new RetryExhausted({ lastError, verdict, attempts, reason }))
}

const afterFailure = <A, E, R, R2>(
  policy: Policy<R2>,
  attempt: (n: number) => Effect.Effect<A, E, R>,
  firstError: E,
  startedAt: number | undefined,
  about: Subject | undefined
): Effect.Effect<A, E | RetryExhausted<E> | Budget.BudgetExhausted<E>, R | R2> =>
  Effect.gen(function*() {
    const started = startedAt ?? (yield* Clock.currentTimeMillis)
    let error = firstError
    let attempts = 1
    let state = policy.schedule.initial
    // Events are a length check on the observers `judge` read, free when unobserved.
    while (true) {
      const [verdict, observers, judgedAt] = yield* judge(policy, error)
      if (!policy.retryOn(error, verdict, judgedAt)) {
        if (observers.length !== 0) notRetried(observers, about, verdict)
        return yield* Effect.fail(error)
      }
      if (attempts >= policy.maxAttempts) return yield* exhausted(observers, about, error, verdict, attempts, "attempts")
      const now = yield* Clock.currentTimeMillis
      const [next, , decision] = yield* policy.schedule.step(now, error, state)
      state = next
      if (ScheduleDecision.isDone(decision)) {
        return yield* exhausted(observers, about, error, verdict, attempts, "schedule")
      }
      let delay = Math.max(0, Intervals.start(decision.intervals) - now)
      if (policy.maxDelayMillis !== undefined) delay = Math.min(delay, policy.maxDelayMillis)
      if (policy.honourRetryAfter && verdict.retryAfter !== undefined) {
        // A hint names the same instant for every caller that got it (a breaker's half-open time, a server's
        // Retry-After): waiting exactly that long brings them all back at once. The simulator caught callers
        // rejected by one open breaker retrying in the same millisecond. The jittered backoff goes on top.
        const hint = Duration.toMillis(verdict.retryAfter)
        if (hint > delay) delay = hint + delay
      }
      if (policy.maxElapsedMillis !== undefined && now + delay - started > policy.maxElapsedMillis) {
        return yield* exhausted(observers, about, error, verdict, attempts, "elapsed")
      }
      const deadline = yield* FiberRef.get(Budget.currentDeadline)
      // A retry that would start at or after the deadline cannot finish within it: do not make it.
      if (Option.isSome(deadline) && now + delay >= deadline.value) {
        if (observers.length !== 0) announce(observers, "budget-exhausted", about, verdict, attempts, delay)
        return yield* Effect.fail(
          new Budget.BudgetExhausted({
            deadline: deadline.value,
            remaining: Duration.millis(Math.max(0, deadline.value - now)),
            needed: Duration.millis(delay),
            lastError: error,
            attempts
          })
        )
      }
      yield* spanEvent({
        "bulwark.retry.attempt": attempts + 1,
        "bulwark.retry.delay_ms": delay,
        "bulwark.failure.category": verdict.category
      })
      yield* Metric.increment(Metric.tagged(retriesTotal, "category", verdict.category))
      if (delay > 0) yield* Effect.sleep(Duration.millis(delay))
      attempts++
      // Announced as the attempt starts, after its wait: what an observer checks spacing and counts against.
      if (observers.length !== 0) announce(observers, "retry", about, verdict, attempts, delay)
      const result = yield* Effect.either(attempt(attempts))
      if (result._tag === "Right") return result.right
      error = result.left
    }
  })

const retrying = <A, E, R, R2>(
  policy: Policy<R2>,
  attempt: (n: number) => Effect.Effect<A, E, R>,
  about: Subject | undefined
): Effect.Effect<A, E | RetryExhausted<E> | Budget.BudgetExhausted<E>, R | R2> =>
  policy.maxElapsedMillis === undefined
    ? Effect.catchAll(attempt(1), (error) => afterFailure(policy, attempt, error, undefined, about))
    : Effect.flatMap(Clock.currentTimeMillis, (started) =>
      Effect.catchAll(attempt(1), (error) => afterFailure(policy, attempt, error, started, about)))

/**
 * Runs `attempt(n)` for n = 1, 2, … under the policy. The first attempt costs no schedule work at all:
 * the schedule, clock and budget are consulted only after a failure.
 */
export const retryWith = <A, E, R, R2>(
  policy: Policy<R2>,
  attempt: (n: number) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | RetryExhausted<E> | Budget.BudgetExhausted<E>, R | R2> => retrying(policy, attempt, undefined)

/** Retries any effect under the policy. */
export const retry = <R2>(policy: Policy<R2>) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | RetryExhausted<E> | Budget.BudgetExhausted<E>, R | R2> =>
  retryWith(policy, () => self)

/**
 * Retry as handler middleware (stage `retry`). Each attempt sees the envelope with `attempt` advanced by the
 * retries made so far and runs in a `bulwark.retry.attempt` span carrying the attempt number; exhaustion
 * fails with {@link RetryExhausted} (permanent, last error's category) for the dead-letter stage.
 */
export const middleware = <R2>(policy: Policy<R2>) =>
<A, E, R>(
  handler: Handler.Handler<A, E, R>
): Handler.Handler<A, E | RetryExhausted<E> | Budget.BudgetExhausted<E>, R | R2> =>
  Handler.withStage("retry", handler, (envelope: Envelope.Envelope<A>) =>
    retrying(policy, (n) => {
      const attempt = envelope.attempt + n - 1
      return handler(n === 1 ? envelope : { ...envelope, attempt }).pipe(
        Effect.withSpan("bulwark.retry.attempt", {
          captureStackTrace: false,
          attributes: { "bulwark.retry.attempt": n, "bulwark.envelope.attempt": attempt, "bulwark.envelope.id": envelope.id }
        })
      )
    }, envelope))
