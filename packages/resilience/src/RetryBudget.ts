/**
 * Retry budgets (Finagle's, gRPC's retry throttling): extra attempts — retries and hedges alike — may add at
 * most `ratio` of the calls made over the last `window`, plus `minPerSecond` so a quiet service can still
 * retry. When a downstream fails for everyone, a budget keeps retries and hedges from multiplying its load.
 *
 * Calls {@link deposit}; every extra attempt must {@link tryWithdraw} first. `Hedge` withdraws for each hedge
 * it sends; {@link retryOn} makes an `@bulwark/retry` policy withdraw for each retry, so both spend from one
 * budget.
 */
import { Effect, Metric } from "effect"

/** Settings of a budget; every field has a default. */
export interface Options {
  /** Extra attempts allowed per call made. Default 0.1 (10 %). */
  readonly ratio?: number
  /** Extra attempts always allowed per second of the window. Default 10. */
  readonly minPerSecond?: number
  /** How far back calls and extra attempts count, in whole seconds. Default 10. */
  readonly windowSeconds?: number
}

/** A retry budget shared by whatever deposits into and withdraws from it. */
export interface RetryBudget {
  readonly name: string
  /** Records a call (a first attempt). */
  readonly unsafeDeposit: (now: number) => void
  /** Takes one extra attempt from the budget if it allows one; answers whether it did. */
  readonly unsafeTryWithdraw: (now: number) => boolean
}

/** Counter of extra attempts refused by a budget, tagged `budget`. */
export const refusedTotal = Metric.counter("bulwark_retry_budget_refused_total", {
  description: "Retries and hedges not made because their retry budget was spent",
  incremental: true
})

/** A budget named `name`. */
export const make = (name: string, options: Options = {}): RetryBudget => {
  const ratio = Math.max(0, options.ratio ?? 0.1)
  const minPerSecond = Math.max(0, options.minPerSecond ?? 10)
  const seconds = Math.max(1, Math.floor(options.windowSeconds ?? 10))
  // One bucket per second, a ring over the window.
  const deposits = new Array<number>(seconds).fill(0)
  const withdrawals = new Array<number>(seconds).fill(0)
  const epochs = new Array<number>(seconds).fill(-1)
  const slot = (now: number) => {
    const epoch = Math.floor(now / 1000)
    const i = epoch % seconds
    if (epochs[i] !== epoch) {
      epochs[i] = epoch
      deposits[i] = 0
      withdrawals[i] = 0
    }
    return i
  }
  const sum = (values: Array<number>, now: number) => {
    const epoch = Math.floor(now / 1000)
    let total = 0
    for (let i = 0; i < seconds; i++) if (epochs[i]! > epoch - seconds) total += values[i]!
    return total
  }
  return {
    name,
    unsafeDeposit: (now) => {
      deposits[slot(now)]!++
    },
    unsafeTryWithdraw: (now) => {
      const i = slot(now)
      const allowed = minPerSecond * seconds + ratio * sum(deposits, now)
      if (sum(withdrawals, now) + 1 > allowed) return false
      withdrawals[i]!++
      return true
    }
  }
}

/** Records a call in the budget at the fiber's clock. */
export const deposit = (budget: RetryBudget): Effect.Effect<void> =>
  Effect.clockWith((clock) => Effect.sync(() => budget.unsafeDeposit(clock.unsafeCurrentTimeMillis())))

/** Takes one extra attempt from the budget; answers whether it could (and counts a refusal). */
export const tryWithdraw = (budget: RetryBudget): Effect.Effect<boolean> =>
  Effect.clockWith((clock) =>
    Effect.suspend(() =>
      budget.unsafeTryWithdraw(clock.unsafeCurrentTimeMillis())
        ? Effect.succeed(true)
        : Effect.as(Metric.increment(Metric.tagged(refusedTotal, "budget", budget.name)), false)
    )
  )

/** Runs `self` as one call: deposits into the budget first (wrap the whole retried or hedged call, once). */
export const counted = (budget: RetryBudget) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.zipRight(deposit(budget), self)

/**
 * A retry predicate for `Retry.policy({ retryOn })` that spends from the budget: a failure `base` would retry
 * is retried only while the budget allows, so retries and hedges share one budget. Withdraws at the time the
 * retry policy passes (the fiber's clock, so virtual time under the simulator), the wall clock when called
 * without one.
 */
export const retryOn = <V>(budget: RetryBudget, base: (error: unknown, verdict: V, now: number) => boolean) =>
(error: unknown, verdict: V, now: number = Date.now()): boolean =>
  base(error, verdict, now) && budget.unsafeTryWithdraw(now)
