/**
 * Supervision for long-running loops (outbox relays, transport subscriptions, dead-letter drains): one place
 * that decides what a fault does to a loop that must outlive it.
 *
 * - A **transient** fault (classified with {@link Failure}) never ends the loop: the loop turns `degraded`,
 *   waits a jittered exponential backoff (capped), and tries again until the service is back; then it is
 *   `up` again. Each state change is logged once (a warning on the way down with the first fault, an info on
 *   the way back with how many faults it took), never once per retry.
 * - A **fatal** fault (a defect, or a failure classified permanent) ends the loop loudly: it is logged at
 *   `Fatal` level with its whole cause, the loop is `failed`, and the cause is the loop's result, so whoever
 *   runs it (a main fiber, `Layer.launch`, a test) sees it. Never a silently dead fiber.
 * - Every loop's state is in {@link health} and the `bulwark_loop_up` gauge (1 up, 0 degraded or failed,
 *   tagged `loop`); every transient fault counts in `bulwark_loop_faults_total`.
 */
import { Cause, Duration, Effect, Metric, Option, Random } from "effect"
import { globalValue } from "effect/GlobalValue"
import * as Failure from "./Failure.js"

/** A supervised loop's state. */
export type Health = "up" | "degraded" | "failed"

/** Settings of a supervised loop. */
export interface Options {
  /** The loop's name in logs, {@link health} and the metrics' `loop` tag (e.g. `outbox-relay:<relay id>`). */
  readonly name: string
  /** The first backoff after a fault; doubles per consecutive fault. Default 100 ms. */
  readonly backoffBase?: Duration.DurationInput
  /** The longest backoff. Default 5 s: the longest a loop stays asleep after its service came back. */
  readonly backoffMax?: Duration.DurationInput
  /**
   * Which failures of the loop ({@link run}) are transient, i.e. restart it. Default: those `Failure.classify`
   * calls transient. A failure that is not is fatal.
   */
  readonly isTransient?: (error: unknown) => boolean
}

/** A supervised loop's view of itself, handed to the loop by {@link make} or {@link run}. */
export interface Supervisor {
  readonly name: string
  /** The loop made progress: it is `up` again (logged once, when it was not), and the backoff starts over. */
  readonly up: Effect.Effect<void>
  /**
   * A transient fault: the loop is `degraded` (logged once, on the change), then this waits the next
   * jittered backoff: a random time between half and all of `min(backoffMax, backoffBase * 2^(faults-1))`.
   */
  readonly degraded: (error: unknown) => Effect.Effect<void>
  /** The loop's current state. */
  readonly health: Effect.Effect<Health>
  /** The loop ended: it leaves {@link health} (unless it `failed`, which stays visible). */
  readonly release: Effect.Effect<void>
  /** The loop stopped for good: `failed` in {@link health} (use {@link failed} to also log it). */
  readonly fail: Effect.Effect<void>
}

/** `1` while the loop is up, `0` while it is degraded or failed; tagged `loop`. */
export const upGauge = Metric.gauge("bulwark_loop_up", {
  description: "1 while a supervised loop is up, 0 while it is degraded or failed (tag loop)"
})

/** Transient faults a supervised loop recovered from (or is recovering from); tagged `loop`. */
export const faultsTotal = Metric.counter("bulwark_loop_faults_total", {
  description: "transient faults of supervised loops (tag loop)",
  incremental: true
})

// Loops by name; several loops may share a name (two consumers of one topic and group), each with its own entry.
const registry = globalValue(
  Symbol.for("@bulwark/core/Supervise/registry"),
  () => new Map<string, Map<symbol, Health>>()
)

const rank: Record<Health, number> = { up: 0, degraded: 1, failed: 2 }

// The state of a name: the worst of its loops'.
const stateOf = (name: string): Health | undefined => {
  let worst: Health | undefined
  for (const state of registry.get(name)?.values() ?? []) {
    if (worst === undefined || rank[state] > rank[worst]) worst = state
  }
  return worst
}

const record = (name: string, id: symbol, state: Health | undefined) => {
  const entries = registry.get(name) ?? new Map<symbol, Health>()
  if (state === undefined) entries.delete(id)
  else entries.set(id, state)
  if (entries.size === 0) registry.delete(name)
  else registry.set(name, entries)
  const now = stateOf(name)
  return now === undefined ? Effect.void : Metric.set(Metric.tagged(upGauge, "loop", name), now === "up" ? 1 : 0)
}

/**
 * Every supervised loop of this process by name, with its current state (the worst, when loops share a name).
 * A loop that ended leaves it, unless it `failed`: that stays visible.
 */
export const health: Effect.Effect<ReadonlyMap<string, Health>> = Effect.sync(() => {
  const all = new Map<string, Health>()
  for (const name of registry.keys()) all.set(name, stateOf(name)!)
  return all
})

/** The longest backoff before the `faults`-th retry: `min(max, base * 2^(faults-1))` (before jitter). */
export const backoffMillis = (baseMillis: number, maxMillis: number, faults: number): number =>
  Math.min(maxMillis, baseMillis * 2 ** Math.min(30, Math.max(0, faults - 1)))

/**
 * A supervisor for the loop `options.name`, registered in {@link health} as `up` until it reports otherwise;
 * call `release` when the loop ends (or use {@link run}, which does).
 */
export const make = (options: Options): Effect.Effect<Supervisor> =>
  Effect.suspend(() => {
    const { name } = options
    const baseMillis = Duration.toMillis(Duration.decode(options.backoffBase ?? "100 millis"))
    const maxMillis = Duration.toMillis(Duration.decode(options.backoffMax ?? "5 seconds"))
    const faults = Metric.tagged(faultsTotal, "loop", name)
    const id = Symbol(name)
    let state: Health = "up"
    let consecutive = 0

    const set = (next: Health) =>
      Effect.suspend(() => {
        state = next
        return record(name, id, next)
      })

    const up: Effect.Effect<void> = Effect.suspend(() => {
      if (state === "up") return Effect.void
      const after = consecutive
      consecutive = 0
      return Effect.zipRight(
        set("up"),
        Effect.logInfo(`${name}: recovered after ${after} fault(s)`).pipe(Effect.annotateLogs({ loop: name, health: "up" }))
      )
    })

    const degraded = (error: unknown): Effect.Effect<void> =>
      Effect.suspend(() => {
        consecutive++
        const announce = state === "up"
          ? Effect.zipRight(
            set("degraded"),
            Effect.logWarning(`${name}: degraded by a transient fault; retrying with backoff until it recovers`, error)
              .pipe(Effect.annotateLogs({ loop: name, health: "degraded" }))
          )
          : Effect.void
        const ceiling = backoffMillis(baseMillis, maxMillis, consecutive)
        return announce.pipe(
          Effect.zipRight(Metric.increment(faults)),
          Effect.zipRight(Random.nextRange(ceiling / 2, ceiling)),
          Effect.flatMap((millis) => Effect.sleep(Duration.millis(millis)))
        )
      })

    const release = Effect.suspend(() => state === "failed" ? Effect.void : record(name, id, undefined))

    const supervisor: Supervisor = { name, up, degraded, health: Effect.sync(() => state), release, fail: set("failed") }
    return Effect.as(record(name, id, state), supervisor)
  })

/** A side task's state-change logger: see {@link changes}. */
export interface Changes {
  /** The task failed: logged (warning, with the error) only if it was working until now. */
  readonly failed: (error: unknown) => Effect.Effect<void>
  /** The task worked: logged (info) only if it was failing until now. */
  readonly ok: Effect.Effect<void>
}

/**
 * Logs a side task's state changes only (a heartbeat, a LISTEN connection, a cleanup): a warning `label`
 * when it starts failing, an info `label: works again` when it recovers, never once per attempt, which during
 * an outage would be one line per beat.
 */
export const changes = (label: string): Changes => {
  let failing = false
  return {
    failed: (error) =>
      Effect.suspend(() => {
        if (failing) return Effect.void
        failing = true
        return Effect.logWarning(label, error)
      }),
    ok: Effect.suspend(() => {
      if (!failing) return Effect.void
      failing = false
      return Effect.logInfo(`${label}: works again`)
    })
  }
}

/**
 * Whether a loop's failure is fatal: a defect, or a failure that is not transient (by `isTransient`, default
 * `Failure.classify`). Interruption is neither.
 */
export const isFatal = <E>(cause: Cause.Cause<E>, isTransient?: (error: unknown) => boolean): Effect.Effect<boolean> => {
  if (Cause.isInterruptedOnly(cause)) return Effect.succeed(false)
  const failure = Cause.failureOption(cause)
  if (Option.isNone(failure) || Cause.isDie(cause)) return Effect.succeed(true)
  if (isTransient !== undefined) return Effect.succeed(!isTransient(failure.value))
  return Effect.map(Failure.classify(failure.value), (verdict) => verdict.classification === "permanent")
}

/**
 * Runs `body` under supervision until it succeeds (a loop that ends by itself ends the supervision) or fails
 * fatally. A transient failure restarts it after the supervisor's backoff; `body` reports progress with
 * `supervisor.up` (or handles its own faults with `supervisor.degraded`). A fatal cause is logged at `Fatal`
 * level, marks the loop `failed`, and is the result.
 */
export const run = <A, E, R>(
  options: Options,
  body: (supervisor: Supervisor) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.flatMap(make(options), (supervisor) => {
    const loop: Effect.Effect<A, E, R> = Effect.catchAllCause(body(supervisor), (cause) =>
      Effect.flatMap(isFatal(cause, options.isTransient), (fatal): Effect.Effect<A, E, R> => {
        if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause)
        if (fatal) return supervisor.fail.pipe(Effect.zipRight(failed(supervisor.name, cause)), Effect.zipRight(Effect.failCause(cause)))
        return Effect.zipRight(supervisor.degraded(Cause.squash(cause)), Effect.suspend(() => loop))
      }))
    return Effect.ensuring(loop, supervisor.release)
  })

/** Logs a loop's fatal cause at `Fatal` level (the loop's result carries it too). */
export const failed = (name: string, cause: Cause.Cause<unknown>): Effect.Effect<void> =>
  Effect.logFatal(`${name}: stopped by a fatal fault; it will not restart`, cause)
    .pipe(Effect.annotateLogs({ loop: name, health: "failed" }))
