// How a gate (a bulkhead's queue, a rate limiter's wait) tells the hedge around it that the attempt it runs
// in is waiting to start: a hedge's delay measures how long an attempt has been *running* unanswered, so it
// starts once the attempt has its slot and permit. A hedge that counted the queueing would send copies of
// calls that are merely throttled, and each copy would take a permit of its own.
//
// Only a gate that actually waits pays for this (a fiber-ref read); a slot or permit granted at once does not.
import { Effect, FiberRef } from "effect"

/** What a hedge hears from the gates its copy passes. */
export interface Attempt {
  /** The copy starts waiting at a gate. */
  readonly waiting: () => void
  /** The copy stops waiting at a gate (admitted, refused or interrupted). */
  readonly admitted: () => void
}

/** The attempt the current fiber runs as, set by a hedge for each copy. */
export const current: FiberRef.FiberRef<Attempt | undefined> = FiberRef.unsafeMake<Attempt | undefined>(undefined)

/** Runs a gate's wait, telling the attempt it runs in (if any) when the wait starts and ends. */
export const waiting = <A, E, R>(wait: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.flatMap(FiberRef.get(current), (attempt) =>
    attempt === undefined ? wait : Effect.uninterruptibleMask((restore) => {
      attempt.waiting()
      return Effect.ensuring(restore(wait), Effect.sync(attempt.admitted))
    }))
