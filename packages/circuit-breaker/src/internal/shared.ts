/**
 * The local side of a shared breaker. Each instance judges calls on a mirror of the stored snapshot, so a
 * closed breaker admits and records without waiting for the store, and merges the outcomes it recorded into
 * the store in batches: one read-modify-write per batch, at most one in flight per instance (a group
 * commit), which brings the merged state back as the new mirror. Contention on a key is therefore bounded
 * by the number of instances, not of concurrent calls.
 *
 * A store fault never reaches a call: the outcome stays queued (when the store certainly did not commit it)
 * and the instance goes on judging on its mirror until the store answers again. Half-open probes are
 * rationed by the store while it answers and by the mirror while it does not.
 */
import { Deferred, Effect, Exit, FiberId, Metric, Runtime } from "effect"
import type { BreakerStateStore, StoreError } from "../BreakerStateStore.js"
import * as Machine from "./machine.js"

/** How a shared breaker syncs with its store. */
export interface SyncConfig {
  /** A closed mirror older than this is refreshed in the background on the next call (millis). */
  readonly syncMillis: number
  /** After a store fault, how long the instance works on its mirror alone before trying again (millis). */
  readonly retryMillis: number
  /** Outcomes kept for the store while it is unreachable; the oldest are dropped beyond this. */
  readonly maxPending: number
}

interface Pending {
  readonly admission: Machine.Admission
  readonly outcome: Machine.Outcome
  readonly at: number
  readonly duration: number
}

/** Counter of store operations a shared breaker gave up on, tagged `breaker` and `operation`. */
export const storeFaultsTotal = Metric.counter("bulwark_breaker_store_faults_total", {
  description: "Breaker state store operations that failed or timed out (the breaker went on locally)"
})

/** The mutable state of one shared breaker instance. */
export interface Shared {
  readonly key: string
  readonly config: Machine.Config
  readonly sync: SyncConfig
  readonly store: BreakerStateStore["Type"]
  readonly initial: () => Machine.Snapshot
  readonly runtime: Runtime.Runtime<never>
  readonly now: () => number
  /** The stored snapshot as last read, plus the outcomes recorded here since. */
  mirror: Machine.Snapshot
  /** Outcomes recorded here and not yet merged into the store. */
  pending: Array<Pending>
  /** Whether a sync is in flight (at most one per instance: the group commit's leader). */
  inFlight: boolean
  /** Completed when the sync after the one in flight ends: what callers that arrive meanwhile wait for. */
  next: Deferred.Deferred<void> | undefined
  /** The version of the stored snapshot last adopted: an older answer arriving late is not adopted. */
  adopted: number
  /** When the mirror was last read from the store. */
  syncedAt: number
  /** While the store is deemed unreachable: the instance does not try it before then. */
  downUntil: number
  /** Serialises this instance's probe requests to the store. */
  readonly probeLock: Effect.Semaphore
  /** Probes admitted by the mirror while the store was unreachable: their outcomes stay local. */
  readonly localProbes: WeakSet<Machine.Admission>
}

/** A shared instance starting from `mirror` (the stored snapshot, or the seed when the store did not answer). */
export const make = (options: {
  readonly key: string
  readonly config: Machine.Config
  readonly sync: SyncConfig
  readonly store: BreakerStateStore["Type"]
  readonly initial: () => Machine.Snapshot
  readonly runtime: Runtime.Runtime<never>
  readonly now: () => number
  readonly mirror: Machine.Snapshot
  readonly synced: boolean
}): Shared => ({
  key: options.key,
  config: options.config,
  sync: options.sync,
  store: options.store,
  initial: options.initial,
  runtime: options.runtime,
  now: options.now,
  mirror: options.mirror,
  pending: [],
  inFlight: false,
  next: undefined,
  adopted: options.mirror.version,
  syncedAt: options.synced ? options.now() : -Infinity,
  downUntil: options.synced ? 0 : options.now() + options.sync.retryMillis,
  probeLock: Effect.unsafeMakeSemaphore(1),
  localProbes: new WeakSet()
})

const fault = (s: Shared, error: StoreError) => {
  const wasUp = s.downUntil <= s.now()
  s.downUntil = s.now() + s.sync.retryMillis
  const counted = Metric.increment(Metric.tagged(Metric.tagged(storeFaultsTotal, "breaker", s.key), "operation", error.operation))
  // Logged when the store becomes unreachable, not on every retry while it stays so.
  return wasUp
    ? Effect.zipRight(
      counted,
      Effect.logWarning(`circuit breaker ${s.key}: state store unreachable, judging calls locally`).pipe(
        Effect.annotateLogs({ breaker: s.key, cause: error.message })
      )
    )
    : counted
}

const recovered = (s: Shared) => {
  const wasDown = s.downUntil !== 0
  s.downUntil = 0
  s.syncedAt = s.now()
  return wasDown ? Effect.logInfo(`circuit breaker ${s.key}: state store reachable again`) : Effect.void
}

/** Adopts a snapshot read from the store, replaying on it the outcomes recorded here and not merged yet. */
const adopt = (s: Shared, stored: Machine.Snapshot) => {
  if (stored.version < s.adopted) return
  s.adopted = stored.version
  for (const p of s.pending) Machine.record(stored, s.config, p.at, p.admission, p.outcome, p.duration)
  s.mirror = stored
}

/**
 * What to keep of a batch the store failed: all of it when the store certainly did not commit it; after a
 * write that may have committed, only the probes' outcomes. Counting a call twice could trip the breaker
 * for nothing, so calls are dropped; a probe's outcome dropped would hold its half-open permit for good.
 */
const unsettled = (batch: Array<Pending>, error: StoreError) =>
  error.operation !== "write" ? batch : batch.filter((p) => p.admission._tag === "probe")

const keep = (s: Shared, batch: Array<Pending>) => {
  const all = batch.length === 0 ? s.pending : batch.concat(s.pending)
  s.pending = all.length > s.sync.maxPending ? all.slice(all.length - s.sync.maxPending) : all
}

const apply = (config: Machine.Config, batch: ReadonlyArray<Pending>, stored: Machine.Snapshot) => {
  // A stored state of another window kind is a configuration clash across deployments, refused when the
  // breaker was made; should one appear later, it is not overwritten with outcomes it cannot hold.
  if (stored.window.kind !== config.window.kind) return
  for (const p of batch) Machine.record(stored, config, p.at, p.admission, p.outcome, p.duration)
}

const merge = (config: Machine.Config, batch: ReadonlyArray<Pending>) => (stored: Machine.Snapshot) => {
  apply(config, batch, stored)
  return Machine.copy(stored)
}

/**
 * Merges the pending outcomes into the store and refreshes the mirror; never fails.
 * Outcomes the store certainly did not commit go back to the queue; after a write that may have committed
 * (a failed or timed-out write) calls' outcomes are dropped rather than risk counting them twice (see
 * {@link unsettled}). The store bounds
 * its own operations (the Redis driver's command timeout), so no sync waits long.
 */
const flush = (s: Shared): Effect.Effect<void> =>
  Effect.suspend(() => {
    const batch = s.pending
    s.pending = []
    const operation = batch.length === 0
      ? Effect.map(s.store.get(s.key), (stored) => stored ?? s.initial())
      : s.store.modify(s.key, s.initial, merge(s.config, batch))
    return Effect.matchEffect(operation, {
      onSuccess: (stored) => (adopt(s, stored), recovered(s)),
      onFailure: (error) => {
        keep(s, unsettled(batch, error))
        return fault(s, error)
      }
    })
  })

/**
 * Syncs (a group commit): with no sync in flight the caller leads one now; otherwise it waits for the sync
 * that starts when the one in flight ends, which carries everything queued by then. Never fails; does
 * nothing while the store is deemed unreachable.
 */
export const syncNow = (s: Shared): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (s.now() < s.downUntil) return Effect.void
    if (!s.inFlight) {
      s.inFlight = true
      return Effect.ensuring(flush(s), Effect.sync(() => handOver(s)))
    }
    const next = s.next ?? (s.next = Deferred.unsafeMake<void>(FiberId.none))
    return Deferred.await(next)
  })

/** Ends a sync: starts the next one in the background when callers are waiting for it. */
const handOver = (s: Shared): void => {
  const next = s.next
  if (next === undefined) {
    s.inFlight = false
    return
  }
  s.next = undefined
  Runtime.runFork(s.runtime)(Effect.ensuring(
    flush(s),
    Effect.sync(() => {
      Deferred.unsafeDone(next, Exit.void)
      handOver(s)
    })
  ))
}

/** Refreshes the mirror in the background unless a sync is in flight (its answer is as fresh). */
const schedule = (s: Shared) => {
  if (s.inFlight || s.now() < s.downUntil) return
  Runtime.runFork(s.runtime)(syncNow(s))
}

const halfOpenBusy: Machine.Admission = { _tag: "reject", state: "half-open", closesAt: undefined }

/** Admits a call locally on the mirror; probes the mirror rations go on the local list. */
const admitLocally = (s: Shared, now: number): Machine.Admission => {
  const admission = Machine.acquire(s.mirror, s.config, now)
  if (admission._tag !== "probe") return admission
  const own: Machine.Admission = { _tag: "probe" }
  s.localProbes.add(own)
  return own
}

/**
 * Admits a call. Closed, disabled, isolated and open before its time are decided on the mirror without the
 * store; a probe is asked of the store (one request per instance at a time), or of the mirror when the
 * store does not answer. Never fails.
 */
export const acquire = (s: Shared, now: number): Effect.Effect<Machine.Admission> => {
  const m = s.mirror
  if (m.state === "closed" || m.state === "disabled") {
    if (now - s.syncedAt >= s.sync.syncMillis) schedule(s)
    return Effect.succeed(m.state === "closed" ? Machine.call : Machine.acquire(m, s.config, now))
  }
  if (m.state === "isolated" || (m.state === "open" && now < m.openUntil)) {
    if (now - s.syncedAt >= s.sync.syncMillis) schedule(s)
    return Effect.succeed(Machine.acquire(m, s.config, now))
  }
  if (now < s.downUntil) return Effect.succeed(admitLocally(s, now))
  // One request at a time per instance; a caller that waited behind one whose answer was "all probes
  // out" takes that answer instead of asking again.
  return s.probeLock.withPermits(1)(Effect.suspend(() => {
    const m = s.mirror
    if (m.state === "half-open" && m.probes.admitted >= s.config.permittedProbes) return Effect.succeed(halfOpenBusy)
    if (m.state !== "half-open" && m.state !== "open") return Effect.succeed(Machine.acquire(m, s.config, now))
    if (s.now() < s.downUntil) return Effect.succeed(admitLocally(s, now))
    const asked = s.store.modify(s.key, s.initial, (stored) => {
      const admission = Machine.acquire(stored, s.config, now)
      return [admission, Machine.copy(stored)] as const
    })
    return Effect.matchEffect(asked, {
      onSuccess: ([admission, stored]) => Effect.as(Effect.zipRight(Effect.sync(() => adopt(s, stored)), recovered(s)), admission),
      onFailure: (error) => Effect.as(fault(s, error), admitLocally(s, now))
    })
  }))
}

/**
 * Records an outcome on the mirror and queues it for the store, then waits for the sync that carries it
 * (unless the store is deemed unreachable), so an outcome is shared by the time its call returns. Never
 * fails: a store fault leaves it queued or local. Answers the mirror's state.
 */
export const record = (
  s: Shared,
  admission: Machine.Admission,
  outcome: Machine.Outcome,
  at: number,
  duration: number
): Effect.Effect<Machine.State> => {
  Machine.record(s.mirror, s.config, at, admission, outcome, duration)
  const shared = admission._tag === "probe"
    ? !s.localProbes.has(admission)
    : admission._tag === "call" && outcome !== "ignored"
  if (!shared) return Effect.succeed(s.mirror.state)
  s.pending.push({ admission, outcome, at, duration })
  if (s.pending.length > s.sync.maxPending) s.pending.shift()
  if (s.now() < s.downUntil) return Effect.succeed(s.mirror.state)
  return Effect.map(syncNow(s), () => s.mirror.state)
}

/**
 * Applies a manual change (isolate, reset…) in the store together with the outcomes pending here; fails when
 * the store does. It needs no turn among the syncs: the store's read-modify-write is atomic, and a sync
 * answering later with an older snapshot is not adopted.
 */
export const modify = <A>(s: Shared, f: (snapshot: Machine.Snapshot) => A): Effect.Effect<A, StoreError> =>
  Effect.suspend(() => {
    const batch = s.pending
    s.pending = []
    return Effect.matchEffect(
      s.store.modify(s.key, s.initial, (stored) => {
        apply(s.config, batch, stored)
        const answer = f(stored)
        return [answer, Machine.copy(stored)] as const
      }),
      {
        onSuccess: ([answer, stored]) => Effect.as(Effect.zipRight(Effect.sync(() => adopt(s, stored)), recovered(s)), answer),
        onFailure: (error) => {
          keep(s, unsettled(batch, error))
          return Effect.zipRight(fault(s, error), Effect.fail(error))
        }
      }
    )
  })
