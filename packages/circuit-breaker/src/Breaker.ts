/**
 * A circuit breaker: stop calling a downstream that is failing, let a few probes test it after a while, and
 * resume when they succeed.
 *
 * - **Windows** (resilience4j semantics): `consecutive` failures; `count`, the last N calls; `time`, the calls
 *   of the last N seconds (one-second buckets).
 * - **Trips** when, over at least `minimumCalls`, the failure rate reaches `failureRateThreshold` or the
 *   share of calls slower than `slowCallDuration` reaches `slowCallRateThreshold`. What counts as a failure
 *   is a predicate over the error and its verdict; by default only *transient* failures count, so a
 *   permanent validation error does not trip the breaker.
 * - **Half-open**: after the open duration (optionally a backoff over consecutive openings) at most
 *   `permittedProbes` calls are admitted, even under concurrency; it closes once the probes' success ratio
 *   is reached and reopens as soon as it no longer can be.
 * - **Manual control**: `isolate` (force open), `disable` (let everything through), `reset`.
 * - **Observable**: transitions as a `Stream` and as metrics; state exportable with `toJSON` and importable
 *   with `initialState`; shareable across processes through a {@link BreakerStateStore}.
 *
 * A rejected call fails with {@link BreakerOpen}: transient, category `dependency`, with a `retryAfter` of
 * when the breaker may admit a probe, so retries and the pipeline wait instead of hammering.
 */
import { Failure, Handler, Observe, Telemetry } from "@bulwark/core"
import type { Envelope } from "@bulwark/core"
import { Cause, Data, Duration, Effect, Effectable, Fiber, Metric, PubSub, Schedule, ScheduleDecision, Schema, Stream } from "effect"
import * as Intervals from "effect/ScheduleIntervals"
import { BreakerStateStore, type StoreError } from "./BreakerStateStore.js"
import * as Machine from "./internal/machine.js"
import * as Shared from "./internal/shared.js"

/** A breaker's state. */
export type State = Machine.State
/**
 * What `execute` answers: the call and the breaker's admission, decided when the effect is run (it may be run
 * again, by a retry, after the breaker opened). One object per `execute` whose admission runs as the effect's
 * own step (a commit): a closure over the call run by `Effect.withFiberRuntime` cost a closure, its context and
 * the primitive per `execute`, and the fiber's status object per run. The wrappers a run builds are kept for the
 * next runs of the same object: `execute` is mostly called once per call (the middleware does), and building
 * both up front cost every call an effect it did not run.
 */
class Guarded<A, E, R> extends Effectable.Class<A, E | BreakerOpen, R> {
  /** The call wrapped with the closed breaker's shared handlers. */
  closedRun: Effect.Effect<A, E, R> | undefined = undefined
  /**
   * A consecutive-failure window with no failure counted: a success would change nothing, so only a failure
   * needs a handler, and a success passes through with no step of the breaker's own.
   */
  failureOnlyRun: Effect.Effect<A, E, R> | undefined = undefined
  constructor(
    readonly self: Effect.Effect<A, E, R>,
    readonly admit: (guarded: Guarded<A, E, R>, fiber: Fiber.RuntimeFiber<unknown, unknown>) => Effect.Effect<A, E | BreakerOpen, R>
  ) {
    super()
  }
  commit(): Effect.Effect<A, E | BreakerOpen, R> {
    // A commit always runs on a fiber's run loop, which is the current fiber then.
    const fiber = Fiber.getCurrentFiber()
    return fiber._tag === "Some"
      ? this.admit(this, fiber.value)
      : Effect.withFiberRuntime((current) => this.admit(this, current))
  }
}

/** A breaker's full state as plain data: what {@link Breaker.toJSON} exports and `initialState` imports. */
export type Snapshot = Machine.Snapshot
/** The window a breaker judges the downstream by. */
export type Window = Machine.WindowConfig

/** Decides whether a failed call counts against the downstream. */
export type FailurePredicate = (error: unknown, verdict: Failure.Verdict) => boolean

/** Settings of a breaker; every field has a default. */
export interface Options {
  /** Default `{ kind: "count", size: 100 }`. */
  readonly window?: Window
  /** Failure share (0..1] of the window that opens the breaker. Default 0.5. */
  readonly failureRateThreshold?: number
  /** Slow-call share (0..1] that opens the breaker, when `slowCallDuration` is set. Default 1. */
  readonly slowCallRateThreshold?: number
  /** A call at least this long is slow. Default: slowness is not judged. */
  readonly slowCallDuration?: Duration.DurationInput
  /** Calls the window must hold before rates are judged. Default 10 (capped at a count window's size). */
  readonly minimumCalls?: number
  /**
   * How long the breaker stays open. Default 30 s. For a backoff over consecutive openings (1, 2, …): a
   * function of the count, or a `Schedule` whose n-th delay is the n-th open duration (stepped once, when
   * the breaker is made, with the services in force there; after it ends, its last delay repeats).
   */
  readonly openDuration?:
    | Duration.DurationInput
    | ((opens: number) => Duration.DurationInput)
    | Schedule.Schedule<unknown, unknown>
  /** Calls admitted while half-open. Default 1. */
  readonly permittedProbes?: number
  /** Share of probes that must succeed to close. Default 1 (all). */
  readonly probeSuccessRatio?: number
  /** Whether a failure counts. Default: its verdict is transient ({@link transientFailures}). */
  readonly isFailure?: FailurePredicate
  /** A state exported by {@link Breaker.toJSON} to start from (validated; see {@link InvalidBreakerState}). */
  readonly initialState?: unknown
  /** How a shared breaker ({@link makeShared}) syncs with its store; ignored in-process. */
  readonly sharing?: Sharing
}

/** How a shared breaker syncs with its store; every field has a default. */
export interface Sharing {
  /** A closed or open instance that made no call for this long refreshes its view on its next call. Default 250 ms. */
  readonly syncInterval?: Duration.DurationInput
  /** After a store fault, how long the instance judges alone before trying the store again. Default 1 s. */
  readonly retryInterval?: Duration.DurationInput
  /** Outcomes kept for the store while it is unreachable (the oldest are dropped beyond). Default 10,000. */
  readonly maxPending?: number
}

const resolveSharing = (sharing: Sharing = {}): Shared.SyncConfig => ({
  syncMillis: Duration.toMillis(sharing.syncInterval ?? "250 millis"),
  retryMillis: Duration.toMillis(sharing.retryInterval ?? "1 second"),
  maxPending: Math.max(1, Math.floor(sharing.maxPending ?? 10_000))
})

/** The default failure predicate: only transient failures count against the downstream. */
export const transientFailures: FailurePredicate = (_error, verdict) => verdict.classification === "transient"

/** An open-duration backoff: `initial · factor^(opens-1)`, capped at `max`. */
export const exponentialOpenDuration = (options: {
  readonly initial: Duration.DurationInput
  readonly max: Duration.DurationInput
  readonly factor?: number
}) => {
  const initial = Duration.toMillis(options.initial)
  const max = Duration.toMillis(options.max)
  const factor = options.factor ?? 2
  return (opens: number): Duration.Duration =>
    Duration.millis(Math.min(max, initial * Math.pow(factor, Math.min(64, Math.max(0, opens - 1)))))
}

/**
 * A call was not made because the breaker is open (or half-open with all probes out, or isolated).
 * Transient, category `dependency`; `retryAfter` says when a probe may be admitted, when that is known.
 */
export class BreakerOpen extends Data.TaggedError("BreakerOpen")<{
  readonly key: string
  readonly state: "open" | "half-open" | "isolated"
  /** The earliest time (epoch millis) the breaker may admit a call, when known. */
  readonly closesAt: number | undefined
  readonly retryAfter: Duration.Duration | undefined
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency", retryAfter: this.retryAfter }
  }
  override get message(): string {
    const when = this.retryAfter === undefined ? "" : `; retry in ${Duration.format(this.retryAfter)}`
    return `circuit breaker ${this.key} is ${this.state}${when}`
  }
}

/** An imported state is malformed or was exported by a breaker with another window kind. */
export class InvalidBreakerState extends Data.TaggedError("InvalidBreakerState")<{
  readonly reason: string
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: "schema" }
  }
  override get message(): string {
    return `invalid breaker state: ${this.reason}`
  }
}

/** One observed change of state. */
export interface Transition {
  readonly key: string
  readonly from: State
  readonly to: State
  /** Epoch millis (Effect `Clock`). */
  readonly at: number
}

/** A circuit breaker; `ES` is what its state store can fail with (`never` in-process). */
export interface Breaker<ES = never> {
  readonly key: string
  /** Runs `self` through the breaker; a shared breaker's store fault never fails a call (it judges locally). */
  readonly execute: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | BreakerOpen, R>
  /**
   * The current state (an open breaker past its open time still reads `open` until a call probes it). A
   * shared breaker syncs with its store first, and answers its local view when the store does not answer.
   */
  readonly state: Effect.Effect<State>
  /** The full state as plain data, for export (cockatiel's `toJSON`). */
  readonly toJSON: Effect.Effect<Snapshot, ES>
  /** Forces the breaker open until {@link reset}. */
  readonly isolate: Effect.Effect<void, ES>
  /** Lets every call through, recording nothing, until {@link reset}. */
  readonly disable: Effect.Effect<void, ES>
  /** Closes the breaker and empties its window. */
  readonly reset: Effect.Effect<void, ES>
  /** State changes this instance observes, from subscription on. */
  readonly transitions: Stream.Stream<Transition>
}

const stateCode: Record<State, number> = { closed: 0, open: 1, "half-open": 2, isolated: 3, disabled: 4 }

/** Gauge of each breaker's state: 0 closed, 1 open, 2 half-open, 3 isolated, 4 disabled. */
export const stateGauge = Metric.gauge("bulwark_breaker_state", {
  description: "Circuit breaker state (0 closed, 1 open, 2 half-open, 3 isolated, 4 disabled)"
})
/** Counter of state transitions, tagged `breaker`, `from` and `to`. */
export const transitionsTotal = Metric.counter("bulwark_breaker_transitions_total", {
  description: "Circuit breaker state transitions",
  incremental: true
})
/** Counter of a shared breaker's store operations given up on (it went on locally), tagged `breaker` and `operation`. */
export const storeFaultsTotal = Shared.storeFaultsTotal
/** Counter of calls rejected without being made, tagged `breaker`. */
export const rejectionsTotal = Metric.counter("bulwark_breaker_rejections_total", {
  description: "Calls rejected by an open circuit breaker",
  incremental: true
})

/** Open durations a schedule asks for, one per consecutive opening. */
const scheduledOpenings = 64

const scheduleDelays = (schedule: Schedule.Schedule<unknown, unknown>): Effect.Effect<ReadonlyArray<number>> =>
  Effect.gen(function*() {
    const delays: Array<number> = []
    let state = schedule.initial
    let now = 0
    for (let i = 0; i < scheduledOpenings; i++) {
      const [next, , decision] = yield* schedule.step(now, undefined, state)
      if (ScheduleDecision.isDone(decision)) break
      state = next
      const delay = Math.max(0, Intervals.start(decision.intervals) - now)
      delays.push(delay)
      now += delay
    }
    return delays
  })

const resolveEffect = (options: Options): Effect.Effect<Machine.Config> => {
  const { openDuration, ...rest } = options
  if (!Schedule.isSchedule(openDuration)) return Effect.succeed(resolve(options))
  return Effect.map(scheduleDelays(openDuration), (delays) => ({
    ...resolve(rest),
    openMillis: (opens: number) => delays.length === 0 ? 0 : delays[Math.min(opens, delays.length) - 1]!
  }))
}

const resolve = (options: Options): Machine.Config => {
  const window = options.window ?? { kind: "count", size: 100 }
  const minimumCalls = Math.max(1, options.minimumCalls ?? 10)
  const open = Schedule.isSchedule(options.openDuration) ? "30 seconds" : options.openDuration ?? "30 seconds"
  return {
    window,
    failureRateThreshold: options.failureRateThreshold ?? 0.5,
    slowCallRateThreshold: options.slowCallRateThreshold ?? 1,
    slowCallMillis: options.slowCallDuration === undefined ? undefined : Duration.toMillis(options.slowCallDuration),
    minimumCalls: window.kind === "count" ? Math.min(window.size, minimumCalls) : minimumCalls,
    openMillis: typeof open === "function" ? (n) => Duration.toMillis(open(n)) : ((m) => () => m)(Duration.toMillis(open)),
    permittedProbes: Math.max(1, Math.floor(options.permittedProbes ?? 1)),
    probeSuccessRatio: Math.min(1, Math.max(0, options.probeSuccessRatio ?? 1))
  }
}

const Counts = { calls: Schema.Number, failures: Schema.Number, slow: Schema.Number }
const SnapshotSchema = Schema.Struct({
  state: Schema.Literal("closed", "open", "half-open", "isolated", "disabled"),
  openedAt: Schema.Number,
  openUntil: Schema.Number,
  opens: Schema.Number,
  window: Schema.Union(
    Schema.Struct({ kind: Schema.Literal("consecutive"), failures: Schema.Number }),
    Schema.Struct({ kind: Schema.Literal("count"), outcomes: Schema.Array(Schema.Number), next: Schema.Number, ...Counts }),
    Schema.Struct({
      kind: Schema.Literal("time"),
      buckets: Schema.Array(Schema.Struct({ epoch: Schema.Number, ...Counts })),
      epoch: Schema.Number,
      ...Counts
    })
  ),
  probes: Schema.Struct({ admitted: Schema.Number, successes: Schema.Number, failures: Schema.Number }),
  version: Schema.Number
})

/** Validates an exported state against a configuration. */
export const importState = (config: Machine.Config, input: unknown): Effect.Effect<Snapshot, InvalidBreakerState> =>
  Effect.flatMap(
    Effect.mapError(Schema.decodeUnknown(SnapshotSchema)(input), (e) => new InvalidBreakerState({ reason: e.message })),
    (decoded) => {
      const snapshot = structuredClone(decoded) as unknown as Snapshot
      const w = snapshot.window
      if (w.kind !== config.window.kind) {
        return Effect.fail(new InvalidBreakerState({ reason: `window is ${w.kind}, breaker uses ${config.window.kind}` }))
      }
      if (w.kind === "count" && (w.outcomes.length > (config.window as { size: number }).size)) {
        return Effect.fail(new InvalidBreakerState({ reason: "count window larger than configured" }))
      }
      if (w.kind === "time" && w.buckets.length !== (config.window as { seconds: number }).seconds) {
        return Effect.fail(new InvalidBreakerState({ reason: "time window length differs from configured" }))
      }
      // Half-open permits in flight at export time belong to calls that no longer exist.
      snapshot.probes.admitted = snapshot.probes.successes + snapshot.probes.failures
      return Effect.succeed(snapshot)
    }
  )

/** How a breaker reads and updates its snapshot: directly (in-process) or through a store. */
interface Access<ES> {
  /** The snapshot when it is in-process (calls are then judged synchronously on it). */
  readonly local: Snapshot | undefined
  /** Manual changes and exports: through the store for a shared breaker, so they can fail with it. */
  readonly modify: <A>(f: (s: Snapshot) => A) => Effect.Effect<A, ES>
  /** A call's admission and the state after it; never fails (a shared breaker falls back to its mirror). */
  readonly acquire: (now: number) => Effect.Effect<readonly [Machine.Admission, State]>
  /** Records an outcome and answers the state after it; never fails. */
  readonly record: (admission: Machine.Admission, outcome: Machine.Outcome, now: number, duration: number) => Effect.Effect<State>
  /** The current state; never fails. */
  readonly read: Effect.Effect<State>
}

const build = <ES>(key: string, config: Machine.Config, isFailure: FailurePredicate, access: Access<ES>, first: State) =>
  Effect.gen(function*() {
    // The clock is the one in force where the breaker is made (a TestClock in tests): reading it per call
    // through the fiber's services would cost more than the breaker itself.
    const clock = yield* Effect.clock
    const hub = yield* PubSub.unbounded<Transition>()
    const gauge = Metric.tagged(stateGauge, "breaker", key)
    const rejections = Metric.tagged(rejectionsTotal, "breaker", key)
    let seen: State = first
    yield* Metric.set(gauge, stateCode[first])

    // Half-open probe calls of this instance running now (across half-open periods), for the `probe` events.
    let probesInFlight = 0

    // Called after every change this instance makes or reads; cheap when nothing changed.
    const observe = (state: State, at: number): Effect.Effect<void> => {
      if (state === seen) return Effect.void
      const from = seen
      seen = state
      return Effect.zipRight(
        Effect.zipRight(
          Observe.emitWith("breaker", "transition", () => ({ breaker: key, from, to: state })),
          // On the span of the call that changed it (a retry attempt, a delivery's process span).
          Telemetry.spanEvent("bulwark.breaker.state_change", { [Telemetry.Attr.breakerKey]: key, from, to: state })
        ),
        Effect.zipRight(
          Effect.zipRight(
            Metric.set(gauge, stateCode[state]),
            Metric.increment(Metric.tagged(Metric.tagged(Metric.tagged(transitionsTotal, "breaker", key), "from", from), "to", state))
          ),
          PubSub.publish(hub, { key, from, to: state, at })
        )
      )
    }

    // Observers are read once per call, where the call is admitted; the paths below take them as a value
    // and build an event only when the list is not empty, so an unobserved call allocates nothing more.
    const called = (observers: ReadonlyArray<Observe.Observer>, outcome: Machine.Outcome) => {
      if (observers.length !== 0) Observe.unsafeNotify(observers, "breaker", "call", { breaker: key, outcome })
    }

    const reject = (
      admission: Extract<Machine.Admission, { _tag: "reject" }>,
      now: number,
      observers: ReadonlyArray<Observe.Observer>
    ) => {
      const rejected = Effect.zipRight(
        Metric.increment(rejections),
        Effect.fail(
          new BreakerOpen({
            key,
            state: admission.state,
            closesAt: admission.closesAt,
            retryAfter: admission.closesAt === undefined ? undefined : Duration.millis(Math.max(0, admission.closesAt - now))
          })
        )
      )
      // Notified when it runs, so it follows the transition event a lazy open → half-open emits first.
      return observers.length === 0 ? rejected : Effect.zipRight(
        Effect.sync(() => Observe.unsafeNotify(observers, "breaker", "rejected", { breaker: key, state: admission.state })),
        rejected
      )
    }

    const settle = (
      admission: Machine.Admission,
      started: number,
      outcome: Machine.Outcome,
      observers: ReadonlyArray<Observe.Observer>
    ) => {
      const now = clock.unsafeCurrentTimeMillis()
      const local = access.local
      if (local !== undefined) {
        Machine.record(local, config, now, admission, outcome, now - started)
        called(observers, outcome)
        return observe(local.state, now)
      }
      return Effect.flatMap(
        access.record(admission, outcome, now, now - started),
        (state) => {
          called(observers, outcome)
          return observe(state, now)
        }
      )
    }

    const outcomeOf = <E>(cause: Cause.Cause<E>): Effect.Effect<Machine.Outcome> =>
      Cause.isInterruptedOnly(cause)
        ? Effect.succeed("ignored")
        : Effect.map(
          Failure.classifyCause(cause),
          (verdict) => isFailure(Cause.squash(cause), verdict) ? "failure" : "success"
        )

    const run = <A, E, R>(
      self: Effect.Effect<A, E, R>,
      admission: Machine.Admission,
      started: number,
      observers: ReadonlyArray<Observe.Observer>
    ): Effect.Effect<A, E, R> => {
      const guarded = (effect: Effect.Effect<A, E, R>) =>
        Effect.matchCauseEffect(effect, {
          onSuccess: (a) => {
            const local = access.local
            if (local !== undefined) {
              // Hot path: record synchronously; only a state change costs an extra effect.
              const now = clock.unsafeCurrentTimeMillis()
              Machine.record(local, config, now, admission, "success", now - started)
              called(observers, "success")
              return local.state === seen ? Effect.succeed(a) : Effect.as(observe(local.state, now), a)
            }
            return Effect.as(settle(admission, started, "success", observers), a)
          },
          onFailure: (cause) =>
            Effect.zipRight(
              Effect.flatMap(outcomeOf(cause), (outcome) => settle(admission, started, outcome, observers)),
              Effect.failCause(cause)
            )
        })
      if (admission._tag !== "probe") return guarded(self)
      // A probe holds one of the few half-open permits: it must give it back even when interrupted. It is
      // counted from the moment it starts to the moment it ends, whatever the exit.
      return Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          const inFlight = ++probesInFlight
          if (observers.length !== 0) {
            Observe.unsafeNotify(observers, "breaker", "probe", {
              breaker: key,
              inFlight,
              permitted: config.permittedProbes
            })
          }
          return guarded(Effect.onExit(restore(self), () =>
            Effect.sync(() => {
              const inFlight = --probesInFlight
              if (observers.length !== 0) {
                Observe.unsafeNotify(observers, "breaker", "probe-done", { breaker: key, inFlight })
              }
            })))
        })
      )
    }

    // Closed, in-process and not timing calls: the common case runs with handlers shared by every call, so
    // a call allocates nothing but its own result (allocation, not logic, dominates the per-call cost).
    const untimedLocal = access.local !== undefined && config.slowCallMillis === undefined
    const readClock = () => clock.unsafeCurrentTimeMillis()
    const closedHandlersFor = (observers: ReadonlyArray<Observe.Observer>) => ({
      onSuccess: (a: any): Effect.Effect<any, any, any> => {
        const local = access.local!
        Machine.record(local, config, readClock, Machine.call, "success", 0)
        called(observers, "success")
        return local.state === seen ? Effect.succeed(a) : Effect.as(observe(local.state, readClock()), a)
      },
      // Classified synchronously with the fiber's rules: one runtime step instead of a chain of effects.
      onFailure: (cause: Cause.Cause<any>): Effect.Effect<any, any, any> =>
        Effect.withFiberRuntime((fiber) => {
          const local = access.local!
          let outcome: Machine.Outcome = "ignored"
          if (!Cause.isInterruptedOnly(cause)) {
            const failure = Cause.failureOption(cause)
            const error = failure._tag === "Some" ? failure.value : Cause.squash(cause)
            // At the breaker's clock, not the wall's: a Retry-After date in the verdict is relative to it.
            const verdict = Failure.classifyWith(fiber.getFiberRef(Failure.currentRules), error, readClock())
            outcome = isFailure(error, verdict) ? "failure" : "success"
          }
          Machine.record(local, config, readClock, Machine.call, outcome, 0)
          called(observers, outcome)
          return local.state === seen
            ? Effect.failCause(cause)
            : Effect.zipRight(observe(local.state, readClock()), Effect.failCause(cause))
        })
    })
    const unobserved: ReadonlyArray<Observe.Observer> = []
    const consecutive = config.window.kind === "consecutive"
    const closedHandlers = closedHandlersFor(unobserved)

    // Admission, run when the guarded effect is: `guarded` carries the call and the wrappers built for it.
    const admit = <A, E, R>(guarded: Guarded<A, E, R>, fiber: Fiber.RuntimeFiber<unknown, unknown>): Effect.Effect<A, E | BreakerOpen, R> => {
      const self = guarded.self
      const observers = fiber.getFiberRef(Observe.currentObservers)
      const local = access.local
      // Closed and untimed: admitted without reading the clock.
      if (untimedLocal && local!.state === "closed" && local!.state === seen) {
        // Observed closed calls get handlers of their own; unobserved ones share `closedRun`.
        if (observers.length !== 0) return Effect.matchCauseEffect(self, closedHandlersFor(observers))
        return consecutive && (local!.window as Extract<Machine.WindowSnapshot, { kind: "consecutive" }>).failures === 0
          ? guarded.failureOnlyRun ??= Effect.catchAllCause(self, closedHandlers.onFailure)
          : guarded.closedRun ??= Effect.matchCauseEffect(self, closedHandlers)
      }
      const now = clock.unsafeCurrentTimeMillis()
      if (local !== undefined) {
        // In-process fast path: the admission is a synchronous read of local state.
        const admission = Machine.acquire(local, config, now)
        if (admission === Machine.call && untimedLocal) {
          return observers.length === 0
            ? guarded.closedRun ??= Effect.matchCauseEffect(self, closedHandlers)
            : Effect.matchCauseEffect(self, closedHandlersFor(observers))
        }
        if (admission._tag === "pass") return self
        const changed = local.state !== seen
        if (admission._tag === "reject") {
          return changed
            ? Effect.zipRight(observe(local.state, now), reject(admission, now, observers))
            : reject(admission, now, observers)
        }
        return changed
          ? Effect.zipRight(observe(local.state, now), run(self, admission, now, observers))
          : run(self, admission, now, observers)
      }
      return Effect.flatMap(
        access.acquire(now),
        ([admission, state]): Effect.Effect<A, E | BreakerOpen, R> => {
          const next: Effect.Effect<A, E | BreakerOpen, R> = admission._tag === "pass"
            ? self
            : admission._tag === "reject"
            ? reject(admission, now, observers)
            : run(self, admission, now, observers)
          return Effect.zipRight(observe(state, now), next)
        }
      )
    }

    const execute = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | BreakerOpen, R> => new Guarded(self, admit)

    const manual = (f: (s: Snapshot) => void) =>
      Effect.suspend(() => {
        const now = clock.unsafeCurrentTimeMillis()
        return Effect.flatMap(access.modify((s) => (f(s), s.state)), (state) => observe(state, now))
      })

    const readState = Effect.flatMap(access.read, (state) => Effect.as(observe(state, clock.unsafeCurrentTimeMillis()), state))

    const breaker: Breaker<ES> = {
      key,
      execute,
      state: readState,
      toJSON: access.modify((s) => structuredClone(s)),
      isolate: manual(Machine.isolate),
      disable: manual(Machine.disable),
      reset: manual((s) => Machine.reset(s, config)),
      transitions: Stream.fromPubSub(hub)
    }
    return breaker
  })

/** An in-process breaker named `key`; fails only when `initialState` is invalid. */
export const make = (key: string, options: Options = {}): Effect.Effect<Breaker, InvalidBreakerState> =>
  Effect.gen(function*() {
    const config = yield* resolveEffect(options)
    const snapshot = options.initialState === undefined
      ? Machine.initial(config)
      : yield* importState(config, options.initialState)
    return yield* build<never>(key, config, options.isFailure ?? transientFailures, {
      local: snapshot,
      modify: (f) => Effect.sync(() => f(snapshot)),
      acquire: (now) => Effect.sync(() => [Machine.acquire(snapshot, config, now), snapshot.state] as const),
      record: (admission, outcome, now, duration) =>
        Effect.sync(() => (Machine.record(snapshot, config, now, admission, outcome, duration), snapshot.state)),
      read: Effect.sync(() => snapshot.state)
    }, snapshot.state)
  })

/**
 * A breaker whose state lives in the {@link BreakerStateStore}: every instance made with the same key over
 * the same store (in any process) shares one window and one state. `initialState` seeds the store only
 * when it holds nothing for the key yet.
 *
 * Each instance judges calls on a mirror of the stored state and merges its outcomes into the store in
 * batches (see `sharing`), so a store fault never fails a call: while the store does not answer, the
 * instance goes on counting and tripping on its own calls, and merges them once the store is back.
 * Manual control (`isolate`, `disable`, `reset`) and `toJSON` go to the store and fail with it.
 */
export const makeShared = (
  key: string,
  options: Options = {}
): Effect.Effect<Breaker<StoreError>, InvalidBreakerState, BreakerStateStore> =>
  Effect.gen(function*() {
    const store = yield* BreakerStateStore
    const config = yield* resolveEffect(options)
    const seed = options.initialState === undefined
      ? Machine.initial(config)
      : yield* importState(config, options.initialState)
    const initial = () => structuredClone(seed)
    const sync = resolveSharing(options.sharing)
    const clock = yield* Effect.clock
    const runtime = yield* Effect.runtime<never>()
    const stored = yield* Effect.either(store.modify(key, initial, (s) => structuredClone(s)))
    if (stored._tag === "Right" && stored.right.window.kind !== config.window.kind) {
      return yield* Effect.fail(
        new InvalidBreakerState({ reason: `stored window is ${stored.right.window.kind}, breaker uses ${config.window.kind}` })
      )
    }
    if (stored._tag === "Left") {
      yield* Effect.logWarning(`circuit breaker ${key}: state store unreachable, judging calls locally`).pipe(
        Effect.annotateLogs({ breaker: key, cause: String(stored.left) })
      )
    }
    const shared = Shared.make({
      key,
      config,
      sync,
      store,
      initial,
      runtime,
      now: () => clock.unsafeCurrentTimeMillis(),
      mirror: stored._tag === "Right" ? stored.right : initial(),
      synced: stored._tag === "Right"
    })
    return yield* build<StoreError>(key, config, options.isFailure ?? transientFailures, {
      local: undefined,
      modify: (f) => Shared.modify(shared, f),
      acquire: (now) => Effect.map(Shared.acquire(shared, now), (admission) => [admission, shared.mirror.state] as const),
      record: (admission, outcome, now, duration) => Shared.record(shared, admission, outcome, now, duration),
      read: Effect.suspend(() => Effect.map(Shared.syncNow(shared), () => shared.mirror.state))
    }, shared.mirror.state)
  })

/** The breaker as handler middleware (stage `breaker`): every attempt goes through it. */
export const middleware = <ES>(breaker: Breaker<ES>) =>
<A, E, R>(handler: Handler.Handler<A, E, R>): Handler.Handler<A, E | BreakerOpen, R> =>
  Handler.withStage("breaker", handler, (envelope: Envelope.Envelope<A>) => breaker.execute(handler(envelope)))

/** Whether an exit was a rejection by a breaker (for callers that fall back). */
export const isBreakerOpen = (u: unknown): u is BreakerOpen => u instanceof BreakerOpen

/** @internal exported for tests and the registry: the resolved configuration. */
export const resolveOptions = resolve
