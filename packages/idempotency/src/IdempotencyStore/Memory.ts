/**
 * The in-process idempotency store. Time comes from Effect's `Clock`, so `TestClock` (and the simulator)
 * drive leases and retention. Expired keys are swept at most once per `sweepInterval`, on the next
 * operation, so memory stays bounded by the keys touched within one retention window — and by `maxEntries`
 * whatever the retention: beyond it the oldest completed keys are forgotten first (a duplicate arriving after
 * its key was forgotten runs again, as it would after its retention). Keys in progress are never evicted.
 */
import { Clock, Duration, Effect, Layer } from "effect"
import * as Store from "../IdempotencyStore.js"

/** Settings of the memory store. */
export interface Options {
  /** How often expired keys are swept (on the next operation). Default 1 second. */
  readonly sweepInterval?: Duration.DurationInput
  /** Upper bound on completed keys kept; the oldest are forgotten first beyond it. Default 100 000. */
  readonly maxEntries?: number
}

interface Entry {
  token: number
  state: "in_progress" | "completed"
  leaseUntil: number
  expiresAt: number
  retention: number
  outcome: unknown
}

/** The memory store, plus its current size for tests and gauges. */
export interface MemoryStore extends Store.Service {
  /** Keys currently held (including expired ones not yet swept). */
  readonly size: Effect.Effect<number>
}

/** Creates a memory store. */
export const make = (options: Options = {}): Effect.Effect<MemoryStore> =>
  Effect.sync(() => {
    const entries = new Map<string, Entry>()
    const sweepEvery = Duration.toMillis(Duration.decode(options.sweepInterval ?? "1 second"))
    const maxEntries = Math.max(1, options.maxEntries ?? 100_000)
    let nextSweep = 0

    // Map order is first-claim order (a fresh claim re-inserts its key), so the front holds the oldest keys.
    const evictOldest = (now: number) => {
      for (const [key, entry] of entries) {
        if (entries.size <= maxEntries) return
        if (entry.state === "completed" || entry.expiresAt <= now) entries.delete(key)
      }
    }

    const sweep = (now: number): number => {
      let evicted = 0
      for (const [key, entry] of entries) {
        if (entry.expiresAt <= now) {
          entries.delete(key)
          evicted++
        }
      }
      nextSweep = now + sweepEvery
      return evicted
    }

    const withNow = <A>(f: (now: number) => A): Effect.Effect<A> =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        if (now >= nextSweep) sweep(now)
        return f(now)
      })

    const owned = (key: string, token: number, now: number): Entry | undefined => {
      const entry = entries.get(key)
      return entry !== undefined && entry.state === "in_progress" && entry.token === token && entry.expiresAt > now
        ? entry
        : undefined
    }

    return {
      claim: (key, options) =>
        withNow((now): Store.Claim => {
          const lease = Duration.toMillis(Duration.decode(options.lease))
          const retention = Duration.toMillis(Duration.decode(options.retention ?? Store.defaultRetention))
          const entry = entries.get(key)
          if (entry !== undefined && entry.expiresAt > now) {
            if (entry.state === "completed") return Store.completed(entry.outcome)
            if (entry.leaseUntil > now) return Store.inProgress(entry.leaseUntil, now)
          }
          const token = entry === undefined ? now : Math.max(entry.token + 1, now)
          entries.delete(key)
          entries.set(key, {
            token,
            state: "in_progress",
            leaseUntil: now + lease,
            expiresAt: now + lease + retention,
            retention,
            outcome: undefined
          })
          if (entries.size > maxEntries) evictOldest(now)
          return Store.fresh(token, now + lease)
        }),
      complete: (key, token, outcome) =>
        Effect.flatMap(Store.encodeOutcome(key, outcome), (json) => withNow((now) => {
          const entry = owned(key, token, now)
          if (entry === undefined) return false
          entry.state = "completed"
          // Stored as JSON so a duplicate gets what a persistent driver would give it.
          entry.outcome = JSON.parse(json)
          entry.expiresAt = now + entry.retention
          return true
        })).pipe(Effect.flatMap((ok) => ok ? Effect.void : Effect.fail(new Store.LeaseLostError({ key, token })))),
      release: (key, token) =>
        Effect.flatMap(withNow((now) => {
          const entry = owned(key, token, now)
          if (entry === undefined) return false
          // Kept (lease ended) rather than deleted so the next owner's token is still larger.
          entry.leaseUntil = now
          return true
        }), (ok) => ok ? Effect.void : Effect.fail(new Store.LeaseLostError({ key, token }))),
      purgeExpired: Effect.map(Clock.currentTimeMillis, sweep),
      size: Effect.sync(() => entries.size)
    }
  })

/** Provides the memory store as the `IdempotencyStore`. */
export const layer = (options: Options = {}): Layer.Layer<Store.IdempotencyStore> =>
  Layer.effect(Store.IdempotencyStore, make(options))
