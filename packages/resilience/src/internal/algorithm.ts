// The two limiter algorithms as pure reservations over a small state, shared by the memory and SQL drivers
// (the Redis driver runs the same arithmetic in Lua, where it is atomic on the server).
//
// Both hand out *reservations*: a caller that may wait is given the time it may proceed at and the state
// records it at once, so waiters queue in the store instead of polling it, and the limit holds over the
// granted times whoever proceeds first.
//
// - Token bucket as GCRA (one number per key, the theoretical arrival time `tat`): `capacity` permits at
//   once, refilled one every `interval` ms. In any window of length T at most `capacity + T / interval`
//   permits are granted.
// - Sliding window as an exact log of the grant times that can still share a window with a new grant (those
//   after `now - window`): a new grant is at least `window` ms after the `limit`-th latest one and no earlier
//   than the latest, so no window of length `window` ever holds more than `limit` grants.
//
// A reservation a waiter gives up (interrupted while it waits) is given back with `release` when that is
// safe: a token bucket takes back the latest reservation only (an earlier one has later grants computed on
// top of it, so returning it would let a new grant share their slot); a sliding window drops the grant from
// its log (any subset of a log that keeps the limit keeps it), which frees a slot for new grants when it was
// the latest one. A reservation that cannot be given back stays taken: the limit errs on the safe side.

/** A resolved limit rule, in whole milliseconds. */
export type Rule =
  | { readonly kind: "tokenBucket"; readonly capacity: number; readonly intervalMillis: number }
  | { readonly kind: "slidingWindow"; readonly limit: number; readonly windowMillis: number }

/** A key's stored state: `tat` for a token bucket, the ascending grant log for a sliding window. */
export interface State {
  tat: number
  log: Array<number>
}

/** The answer to a reservation. */
export type Decision =
  | { readonly granted: true; readonly at: number; readonly waitMillis: number }
  | { readonly granted: false; readonly retryAfterMillis: number }

/** How many permits one request can ever take under the rule. */
export const maxPermits = (rule: Rule): number => rule.kind === "tokenBucket" ? rule.capacity : rule.limit

/** Reserves `permits` at `now` if they can be granted within `maxWaitMillis`; mutates `state` only when granted. */
export const reserve = (state: State, rule: Rule, now: number, permits: number, maxWaitMillis: number): Decision => {
  if (rule.kind === "tokenBucket") {
    const next = Math.max(state.tat, now) + permits * rule.intervalMillis
    const at = next - rule.capacity * rule.intervalMillis
    const wait = Math.max(0, at - now)
    if (wait > maxWaitMillis) return { granted: false, retryAfterMillis: wait }
    state.tat = next
    return { granted: true, at: Math.max(at, now), waitMillis: wait }
  }
  const log = state.log
  // Grants a window or more before `now` share no window with any grant from now on.
  let stale = 0
  while (stale < log.length && log[stale]! <= now - rule.windowMillis) stale++
  if (stale > 0) log.splice(0, stale)
  // The grant `limit` places before the last new one bounds it: all `permits` share one time.
  const bound = log.length - rule.limit + permits - 1
  const at = Math.max(now, bound >= 0 ? log[bound]! + rule.windowMillis : now, log.length > 0 ? log[log.length - 1]! : now)
  const wait = at - now
  if (wait > maxWaitMillis) return { granted: false, retryAfterMillis: wait }
  for (let i = 0; i < permits; i++) log.push(at)
  return { granted: true, at, waitMillis: wait }
}

/** Gives back `permits` reserved at `at` (a grant that waited and was abandoned) where safe; answers whether it did. */
export const release = (state: State, rule: Rule, permits: number, at: number): boolean => {
  if (rule.kind === "tokenBucket") {
    // Only the latest reservation ends at the bucket's `tat`: taking it back restores the state as if it
    // had never been made.
    const next = at + rule.capacity * rule.intervalMillis
    if (Math.abs(state.tat - next) > Math.min(0.01, rule.intervalMillis / 2)) return false
    state.tat -= permits * rule.intervalMillis
    return true
  }
  const log = state.log
  let found = 0
  for (let i = log.length - 1; i >= 0 && found < permits; i--) if (log[i] === at) found++
  if (found < permits) return false
  let removed = 0
  for (let i = log.length - 1; i >= 0 && removed < permits; i--) {
    if (log[i] === at) {
      log.splice(i, 1)
      removed++
    }
  }
  return true
}

/** A fresh state. */
export const initial = (): State => ({ tat: 0, log: [] })

/** When a key's state stops mattering (from then on it grants exactly as a fresh one): for store expiry. */
export const horizon = (state: State, rule: Rule): number =>
  rule.kind === "tokenBucket" ? state.tat : (state.log[state.log.length - 1] ?? 0) + rule.windowMillis
