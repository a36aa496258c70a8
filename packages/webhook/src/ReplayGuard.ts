/**
 * The replay guard: remembers webhook ids for a while so a repeated delivery is recognised. It is shaped
 * like an idempotency store (claim, commit, release): the memory driver keeps ids in-process with expiry on
 * Effect's `Clock` (the easy default, lost on restart and not shared); `ReplayGuard/Idempotency` adapts any
 * `IdempotencyStore` (memory, SQL, Redis) so dedupe survives restarts and is shared by every ingress instance.
 *
 * Ingress uses claim → persist → commit, releasing on failure: a failed persist leaves no record, so the
 * sender's retry is processed rather than mistaken for a duplicate.
 */
import { Failure } from "@bulwark/core"
import { Clock, Context, Data, Duration, Effect, Layer } from "effect"

/** What a claim found. */
export type ClaimResult =
  /** Nobody had it: the caller owns it until it commits or releases (or the lease expires). */
  | "claimed"
  /** Another caller holds an unexpired claim on it. */
  | "in-flight"
  /** It was committed within its time to live: a duplicate. */
  | "seen"

/** The guard's store could not be reached or refused the operation. Transient, category `dependency`. */
export class ReplayGuardError extends Data.TaggedError("ReplayGuardError")<{
  readonly operation: "claim" | "commit" | "release"
  readonly key: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }
  override get message(): string {
    return `replay guard ${this.operation} of "${this.key}" failed: ${String(this.cause)}`
  }
}

/** The replay guard port. */
export class ReplayGuard extends Context.Tag("@bulwark/webhook/ReplayGuard")<ReplayGuard, {
  /**
   * Claims `key` for `lease` (how long a crashed claimant blocks others). `ttl` is how long the key is
   * remembered once committed, for drivers that fix it at the claim (the idempotency adapter).
   */
  readonly claim: (key: string, lease: Duration.DurationInput, ttl?: Duration.DurationInput) => Effect.Effect<ClaimResult, ReplayGuardError>
  /** Records `key` as processed for `ttl`. */
  readonly commit: (key: string, ttl: Duration.DurationInput) => Effect.Effect<void, ReplayGuardError>
  /** Drops a claim that did not complete, so the next attempt may claim it. */
  readonly release: (key: string) => Effect.Effect<void, ReplayGuardError>
  /**
   * The same three operations done at once, at `now` (epoch millis of the caller's clock), for drivers whose
   * store is in-process (the memory driver): the ingress then needs no fiber per request. Absent otherwise.
   */
  readonly immediate?: {
    readonly claim: (key: string, lease: Duration.DurationInput, now: number) => ClaimResult
    readonly commit: (key: string, ttl: Duration.DurationInput, now: number) => void
    readonly release: (key: string) => void
  }
}>() {}

/**
 * Claims and commits `key` at once: true the first time within `ttl`, false for a repeat or a concurrent
 * claim. For callers (a verifier) that have nothing to persist in between.
 */
export const firstSeen = (key: string, ttl: Duration.DurationInput): Effect.Effect<boolean, ReplayGuardError, ReplayGuard> =>
  Effect.flatMap(ReplayGuard, (guard) =>
    Effect.flatMap(guard.claim(key, ttl, ttl), (result) =>
      result === "claimed" ? Effect.as(guard.commit(key, ttl), true) : Effect.succeed(false)))

/** Settings of the memory driver. */
export interface MemoryOptions {
  /** Upper bound on remembered ids; the oldest are forgotten first beyond it. Default 100 000. */
  readonly maxEntries?: number
}

/** Creates an in-memory replay guard; time comes from `Clock`, so `TestClock` drives expiry. */
export const makeMemory = (options: MemoryOptions = {}): Effect.Effect<Context.Tag.Service<ReplayGuard>> =>
  Effect.sync(() => {
    const maxEntries = options.maxEntries ?? 100_000
    interface Entry {
      readonly key: string
      state: "claimed" | "seen"
      expiresAt: number
    }
    const entries = new Map<string, Entry>()
    // Entries in the order they were written, oldest at `head`: for one ttl that is expiry order, so sweeping
    // looks only at the front. A Map iterated from its start would step over every entry deleted since it
    // last compacted, which at the bound (one eviction per claim) costs thousands of steps per claim.
    let order: Array<Entry> = []
    let head = 0
    const sweep = (now: number) => {
      while (head < order.length) {
        const entry = order[head]!
        if (entries.get(entry.key) !== entry) head++ // replaced or released since: nothing to do
        else if (entry.expiresAt <= now || entries.size > maxEntries) {
          entries.delete(entry.key)
          head++
        } else break
      }
      if (head > 1024 && head * 2 > order.length) {
        order = order.slice(head)
        head = 0
      }
    }
    const put = (key: string, state: "claimed" | "seen", now: number, ttl: Duration.DurationInput) => {
      const entry: Entry = { key, state, expiresAt: now + Duration.toMillis(ttl) }
      entries.set(key, entry)
      order.push(entry)
    }
    const claim = (key: string, lease: Duration.DurationInput, now: number): ClaimResult => {
      sweep(now)
      const entry = entries.get(key)
      if (entry !== undefined && entry.expiresAt > now) return entry.state === "seen" ? "seen" : "in-flight"
      put(key, "claimed", now, lease)
      return "claimed"
    }
    const commit = (key: string, ttl: Duration.DurationInput, now: number): void => {
      // The usual case, the claim this commit follows: updated where it is, rather than a second entry per id.
      const entry = entries.get(key)
      if (entry === undefined || entry.state !== "claimed") return put(key, "seen", now, ttl)
      entry.state = "seen"
      entry.expiresAt = now + Duration.toMillis(ttl)
    }
    const release = (key: string): void => {
      if (entries.get(key)?.state === "claimed") entries.delete(key)
    }
    return {
      claim: (key, lease) => Effect.map(Clock.currentTimeMillis, (now) => claim(key, lease, now)),
      commit: (key, ttl) => Effect.map(Clock.currentTimeMillis, (now) => commit(key, ttl, now)),
      release: (key) => Effect.sync(() => release(key)),
      immediate: { claim, commit, release }
    }
  })

/** Provides an in-memory {@link ReplayGuard}. */
export const layerMemory = (options: MemoryOptions = {}): Layer.Layer<ReplayGuard> =>
  Layer.effect(ReplayGuard, makeMemory(options))
