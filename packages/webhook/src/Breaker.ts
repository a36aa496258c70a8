/**
 * A small per-endpoint circuit breaker for the egress sender, behind an interface so a richer breaker
 * (e.g. `@bulwark/circuit-breaker`) can replace it. After `failureThreshold` consecutive failures an
 * endpoint's breaker opens for `cooldown`; then one trial attempt is let through (half-open) and its
 * outcome closes or re-opens it. Time comes from `Clock`.
 */
import { Clock, Duration, Effect } from "effect"

/** What the sender needs from a breaker. */
export interface Breaker {
  /** Whether an attempt to `key` may go out now (in half-open state, only one trial at a time). */
  readonly allow: (key: string) => Effect.Effect<boolean>
  /** Reports the outcome of an allowed attempt. */
  readonly report: (key: string, success: boolean) => Effect.Effect<void>
  /** The current state of `key`. */
  readonly state: (key: string) => Effect.Effect<"closed" | "open" | "half-open">
}

/** Settings of {@link make}. */
export interface Options {
  /** Consecutive failures that open the breaker. Default 5. */
  readonly failureThreshold?: number
  /** How long it stays open before a trial. Default 30 s. */
  readonly cooldown?: Duration.DurationInput
}

/** A consecutive-failures breaker per key, in memory. */
export const make = (options: Options = {}): Breaker => {
  const threshold = options.failureThreshold ?? 5
  const cooldown = Duration.toMillis(options.cooldown ?? Duration.seconds(30))
  const states = new Map<string, { failures: number; openedAt: number | undefined; trial: boolean }>()
  const get = (key: string) => {
    let s = states.get(key)
    if (s === undefined) {
      s = { failures: 0, openedAt: undefined, trial: false }
      states.set(key, s)
    }
    return s
  }
  const stateAt = (key: string, now: number) => {
    const s = get(key)
    if (s.openedAt === undefined) return "closed" as const
    return now - s.openedAt >= cooldown ? "half-open" as const : "open" as const
  }
  return {
    allow: (key) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const state = stateAt(key, now)
        if (state === "closed") return true
        if (state === "open") return false
        const s = get(key)
        if (s.trial) return false
        s.trial = true
        return true
      }),
    report: (key, success) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const s = get(key)
        s.trial = false
        if (success) {
          s.failures = 0
          s.openedAt = undefined
        } else {
          s.failures++
          if (s.openedAt !== undefined || s.failures >= threshold) s.openedAt = now
        }
      }),
    state: (key) => Effect.map(Clock.currentTimeMillis, (now) => stateAt(key, now))
  }
}
