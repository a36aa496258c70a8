/**
 * Backoff schedules: how long to wait before each retry.
 *
 * Every backoff is an ordinary Effect `Schedule` (usable with `Effect.retry` too) whose output is the delay it
 * chose. Jitter follows the AWS Architecture Blog's "Exponential Backoff And Jitter" formulas and draws from
 * Effect's `Random` service, so a seeded `Random` (tests, the simulator) makes the delays reproducible.
 *
 * With `n` the retry number starting at 0, `base` the first delay and `cap` the largest:
 * - none: `min(cap, base * factor^n)`
 * - full: `random(0, min(cap, base * factor^n))`
 * - equal: `t / 2 + random(0, t / 2)` with `t = min(cap, base * factor^n)`
 * - decorrelated: `min(cap, random(base, previous * 3))`, starting from `previous = base`
 */
import { Duration, Effect, Random, Schedule, ScheduleDecision } from "effect"
import * as Interval from "effect/ScheduleInterval"

/** How randomness spreads the delays of many clients apart. */
export type Jitter = "none" | "full" | "equal" | "decorrelated"

/** Settings of {@link exponential}. */
export interface ExponentialOptions {
  /** The first delay. */
  readonly base: Duration.DurationInput
  /** Growth per retry. Default 2. */
  readonly factor?: number
  /** The largest delay the formula produces. Default 30 seconds. */
  readonly cap?: Duration.DurationInput
  /** Default `"full"`, the AWS article's recommendation for contended resources. */
  readonly jitter?: Jitter
}

/** `min(cap, base * factor^n)`, in millis; guards against overflow for large `n`. */
export const exponentialMillis = (base: number, factor: number, cap: number, n: number): number =>
  Math.min(cap, base * Math.pow(factor, Math.min(n, 1_000)))

/** Full jitter for retry `n` given a uniform draw `r` in [0, 1), in whole millis (timers have no finer grain). */
export const fullJitterMillis = (base: number, factor: number, cap: number, n: number, r: number): number =>
  Math.floor(r * exponentialMillis(base, factor, cap, n))

/** Equal jitter for retry `n` given a uniform draw `r` in [0, 1), in whole millis. */
export const equalJitterMillis = (base: number, factor: number, cap: number, n: number, r: number): number => {
  const t = exponentialMillis(base, factor, cap, n)
  return Math.floor(t / 2 + r * (t / 2))
}

/** Decorrelated jitter given the previous delay and a uniform draw `r` in [0, 1), in whole millis. */
export const decorrelatedJitterMillis = (base: number, cap: number, previous: number, r: number): number => {
  const upper = Math.max(base, previous * 3)
  return Math.floor(Math.min(cap, base + r * (upper - base)))
}

const continueAfter = (now: number, delayMillis: number) =>
  ScheduleDecision.continueWith(Interval.after(now + delayMillis))

/** The same delay before every retry. */
export const constant = (delay: Duration.DurationInput): Schedule.Schedule<Duration.Duration> => {
  const d = Duration.decode(delay)
  const millis = Duration.toMillis(d)
  return Schedule.makeWithState(0, (now, _input: unknown, n) =>
    Effect.succeed([n + 1, d, continueAfter(now, millis)] as const))
}

/** Exponential backoff with optional jitter; the output is the chosen delay. */
export const exponential = (options: ExponentialOptions): Schedule.Schedule<Duration.Duration> => {
  const base = Duration.toMillis(options.base)
  const factor = options.factor ?? 2
  const cap = Duration.toMillis(options.cap ?? "30 seconds")
  const jitter = options.jitter ?? "full"
  const emit = (now: number, n: number, previous: number, millis: number) =>
    [{ n: n + 1, previous: millis }, Duration.millis(millis), continueAfter(now, millis)] as const
  return Schedule.makeWithState({ n: 0, previous: base }, (now, _input: unknown, { n, previous }) => {
    switch (jitter) {
      case "none":
        return Effect.succeed(emit(now, n, previous, exponentialMillis(base, factor, cap, n)))
      case "full":
        return Effect.map(Random.next, (r) => emit(now, n, previous, fullJitterMillis(base, factor, cap, n, r)))
      case "equal":
        return Effect.map(Random.next, (r) => emit(now, n, previous, equalJitterMillis(base, factor, cap, n, r)))
      case "decorrelated":
        return Effect.map(Random.next, (r) => emit(now, n, previous, decorrelatedJitterMillis(base, cap, previous, r)))
    }
  })
}

/** The default backoff of a retry policy: 100 ms doubling to 10 s with full jitter. */
export const defaultBackoff: Schedule.Schedule<Duration.Duration> = exponential({
  base: "100 millis",
  cap: "10 seconds",
  jitter: "full"
})
