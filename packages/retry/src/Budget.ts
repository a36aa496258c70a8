/**
 * Deadline budgets: the outermost caller decides how long the whole operation may take, and every nested
 * call and every retry spends from that one budget instead of starting its own clock.
 *
 * A budget is an absolute deadline (epoch milliseconds, read from Effect's `Clock`) held in a `FiberRef`, so
 * it follows forked fibers and can only shrink: a nested {@link withBudget} never extends its caller's.
 * Between services it travels in the `bulwark-deadline` envelope header ({@link headers} when publishing,
 * {@link middleware} when consuming).
 */
import { Envelope, Failure, Handler } from "@bulwark/core"
import { Clock, Data, Duration, Effect, FiberRef, Option } from "effect"
import { dual } from "effect/Function"
import { globalValue } from "effect/GlobalValue"

/** The deadline in force for the current fiber (epoch millis), if any caller set one. */
export const currentDeadline: FiberRef.FiberRef<Option.Option<number>> = globalValue(
  Symbol.for("@bulwark/retry/Budget/currentDeadline"),
  () => FiberRef.unsafeMake<Option.Option<number>>(Option.none())
)

/**
 * The budget ran out: a retry (or a nested call) would not finish before the deadline, so it was not made.
 * Permanent, category `timeout`: the deadline is absolute, so trying again later cannot help.
 */
export class BudgetExhausted<E = unknown> extends Data.TaggedError("BudgetExhausted")<{
  /** The deadline (epoch millis) that could not be met. */
  readonly deadline: number
  /** What was left of the budget when the decision was made. */
  readonly remaining: Duration.Duration
  /** What the next step needed (the retry delay), when known. */
  readonly needed?: Duration.Duration
  /** The failure that would have been retried, when a retry was refused. */
  readonly lastError?: E
  /** Attempts made before the budget ran out. */
  readonly attempts: number
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: "timeout" }
  }
  override get message(): string {
    const needed = this.needed === undefined ? "" : `, needed ${Duration.format(this.needed)}`
    return `deadline budget exhausted after ${this.attempts} attempt(s): ${Duration.format(this.remaining)} left${needed}`
  }
}

/** The `bulwark-deadline` header could not be read as epoch milliseconds. Permanent, category `schema`. */
export class InvalidDeadlineHeader extends Data.TaggedError("InvalidDeadlineHeader")<{
  readonly value: string
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: "schema" }
  }
  override get message(): string {
    return `header ${Envelope.HeaderNames.deadline} is not epoch milliseconds: ${JSON.stringify(this.value)}`
  }
}

/** Runs `self` with an absolute deadline; an earlier deadline already in force wins. */
export const withDeadline: {
  (deadline: number): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, deadline: number): Effect.Effect<A, E, R>
} = dual(2, <A, E, R>(self: Effect.Effect<A, E, R>, deadline: number) =>
  Effect.locallyWith(self, currentDeadline, (current) =>
    Option.some(Option.match(current, { onNone: () => deadline, onSome: (d) => Math.min(d, deadline) }))))

/** Runs `self` with a budget of `duration` from now (Effect `Clock`); it can only shrink an outer budget. */
export const withBudget: {
  (duration: Duration.DurationInput): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, duration: Duration.DurationInput): Effect.Effect<A, E, R>
} = dual(2, <A, E, R>(self: Effect.Effect<A, E, R>, duration: Duration.DurationInput) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => withDeadline(self, now + Duration.toMillis(duration))))

/** The deadline in force, if any. */
export const deadline: Effect.Effect<Option.Option<number>> = FiberRef.get(currentDeadline)

/** What is left of the budget (never negative), or `None` when no budget is set. */
export const remaining: Effect.Effect<Option.Option<Duration.Duration>> = Effect.flatMap(
  FiberRef.get(currentDeadline),
  (d) =>
    Option.isNone(d)
      ? Effect.succeed(Option.none())
      : Effect.map(Clock.currentTimeMillis, (now) => Option.some(Duration.millis(Math.max(0, d.value - now))))
)

/**
 * Spends from the budget on a nested call: `self` is interrupted when the deadline passes and fails with
 * {@link BudgetExhausted}; without a budget it runs unbounded. A call started with nothing left is not made.
 */
export const bounded = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | BudgetExhausted, R> =>
  Effect.flatMap(FiberRef.get(currentDeadline), (d) => {
    if (Option.isNone(d)) return self
    const deadlineMillis = d.value
    return Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const left = deadlineMillis - now
      const exhausted = () =>
        new BudgetExhausted({ deadline: deadlineMillis, remaining: Duration.zero, attempts: 0 })
      if (left <= 0) return Effect.fail(exhausted())
      return Effect.timeoutFail(self, { duration: Duration.millis(left), onTimeout: exhausted })
    })
  })

/** Reads a deadline header: `None` when absent, a typed error when present but not epoch millis. */
export const fromHeaders = (
  headers: Readonly<Record<string, string>>
): Effect.Effect<Option.Option<number>, InvalidDeadlineHeader> => {
  const value = headers[Envelope.HeaderNames.deadline]
  if (value === undefined) return Effect.succeed(Option.none())
  const parsed = /^\d{1,16}$/.test(value.trim()) ? Number(value.trim()) : Number.NaN
  return Number.isSafeInteger(parsed)
    ? Effect.succeed(Option.some(parsed))
    : Effect.fail(new InvalidDeadlineHeader({ value }))
}

/** The header carrying the current deadline, to add to an outgoing message (empty without a budget). */
export const headers: Effect.Effect<Record<string, string>> = Effect.map(
  FiberRef.get(currentDeadline),
  Option.match({
    onNone: () => ({}),
    onSome: (d) => ({ [Envelope.HeaderNames.deadline]: String(d) })
  })
)

/** Stamps an outgoing envelope with the current deadline (unchanged without a budget). */
export const stamp = <A>(envelope: Envelope.Envelope<A>): Effect.Effect<Envelope.Envelope<A>> =>
  Effect.map(headers, (h) => Object.keys(h).length === 0 ? envelope : Envelope.withHeaders(envelope, h))

/**
 * Middleware that adopts the deadline an envelope carries: the handler runs within it (nested budgets and
 * retries spend from it), an envelope that arrives already past its deadline is not handled
 * ({@link BudgetExhausted}, dead-lettered as `timeout`), and a malformed header fails with
 * {@link InvalidDeadlineHeader}. It declares no stage, so it may sit anywhere in the stack.
 */
export const middleware: <A, E, R>(
  handler: Handler.Handler<A, E, R>
) => Handler.Handler<A, E | BudgetExhausted | InvalidDeadlineHeader, R> = Handler.around<
  BudgetExhausted | InvalidDeadlineHeader,
  never
>(<A, E, R>(effect: Effect.Effect<void, E, R>, envelope: Envelope.Envelope<A>) =>
  Effect.flatMap(fromHeaders(envelope.headers), (d): Effect.Effect<void, E | BudgetExhausted | InvalidDeadlineHeader, R> => {
    if (Option.isNone(d)) return effect
    const deadlineMillis = d.value
    return Effect.flatMap(
      Clock.currentTimeMillis,
      (now): Effect.Effect<void, E | BudgetExhausted, R> =>
        now >= deadlineMillis
          ? Effect.fail(new BudgetExhausted({ deadline: deadlineMillis, remaining: Duration.zero, attempts: 0 }))
          : withDeadline(effect, deadlineMillis)
    )
  })
)
