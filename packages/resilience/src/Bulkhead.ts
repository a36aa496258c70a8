/**
 * Bulkheads: at most `maxConcurrent` calls in flight per key, at most `maxQueue` more waiting for a slot (in
 * arrival order, each for at most `maxWait`), the rest rejected at once with {@link BulkheadFull}. A slow
 * partner then ties up its own compartment, not every fiber of the process.
 *
 * In-process by design: a bulkhead protects this process's resources (fibers, sockets, memory); a limit
 * shared across processes is a rate limit (see `RateLimiter`).
 *
 * As handler middleware it is the `bulkhead` stage: outside the breaker (a full bulkhead is local load, not
 * a downstream fault, so it must not trip the breaker) and outside the rate limiter (a slot bounds the
 * attempts waiting for a permit too), inside retry (each attempt takes a slot and gives it back before the
 * retry's wait, so waiting retries hold nothing).
 */
import { Failure, Handler, Observe, Telemetry } from "@bulwark/core"
import type { Envelope } from "@bulwark/core"
import { type Cause, Data, Deferred, Duration, Effect, Exit, FiberId, Metric, MetricKey, MetricLabel } from "effect"
import * as Attempt from "./internal/attempt.js"

/** Settings of a bulkhead. */
export interface Options {
  /** Calls in flight at once, per key. */
  readonly maxConcurrent: number
  /** Calls waiting for a slot, per key; beyond, calls are rejected. Default 0. */
  readonly maxQueue?: number
  /** The longest a call waits for a slot before it is rejected. Default: as long as it takes. */
  readonly maxWait?: Duration.DurationInput
}

/** No slot: the queue was full, or the wait ran out. Transient, category `dependency`. */
export class BulkheadFull extends Data.TaggedError("BulkheadFull")<{
  readonly bulkhead: string
  readonly key: string
  readonly reason: "queue-full" | "wait-timeout"
  readonly maxConcurrent: number
  readonly maxQueue: number
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }
  override get message(): string {
    return this.reason === "queue-full"
      ? `bulkhead ${this.bulkhead} (${this.key}) is full: ${this.maxConcurrent} in flight, ${this.maxQueue} waiting`
      : `bulkhead ${this.bulkhead} (${this.key}): no slot free within the wait bound`
  }
}

/** Settings out of range. Permanent. */
export class InvalidBulkhead extends Data.TaggedError("InvalidBulkhead")<{ readonly bulkhead: string; readonly reason: string }>
  implements Failure.Classified
{
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: "unknown" }
  }
  override get message(): string {
    return `bulkhead ${this.bulkhead}: ${this.reason}`
  }
}

/** A key's occupancy. */
export interface Stats {
  readonly active: number
  readonly queued: number
}

/** A keyed bulkhead. */
export interface Bulkhead {
  readonly name: string
  /** Runs `self` in a slot of `key`'s compartment (default `"*"`). */
  readonly execute: <A, E, R>(self: Effect.Effect<A, E, R>, key?: string) => Effect.Effect<A, E | BulkheadFull, R>
  /** The occupancy of `key`'s compartment now. */
  readonly stats: (key?: string) => Stats
}

const activeKey = MetricKey.gauge("bulwark_bulkhead_active", { description: "Calls in flight in a bulkhead" })
const queuedKey = MetricKey.gauge("bulwark_bulkhead_queued", { description: "Calls waiting for a bulkhead slot" })
/** Gauge of calls in flight, tagged `bulkhead`. */
export const activeGauge = Metric.fromMetricKey(activeKey)
/** Gauge of calls waiting for a slot, tagged `bulkhead`. */
export const queuedGauge = Metric.fromMetricKey(queuedKey)
/** Counter of calls that waited for a slot, tagged `bulkhead`. */
export const waitsTotal = Metric.counter("bulwark_bulkhead_waits_total", {
  description: "Calls that waited for a bulkhead slot",
  incremental: true
})
/** Counter of calls rejected, tagged `bulkhead` and `reason`. */
export const rejectionsTotal = Metric.counter("bulwark_bulkhead_rejections_total", {
  description: "Calls rejected by a full bulkhead",
  incremental: true
})

interface Waiter {
  readonly deferred: Deferred.Deferred<void>
  handed: boolean
}

interface Compartment {
  active: number
  readonly queue: Array<Waiter>
  /** Gives this compartment's slot back whatever the exit; made once, shared by every call. */
  readonly release: {
    readonly onSuccess: (a: any) => Effect.Effect<any, any>
    readonly onFailure: (cause: Cause.Cause<any>) => Effect.Effect<any, any>
  }
}

/** Idle compartments are swept once there are this many, so per-tenant keys do not accumulate. */
const sweepAbove = 1_000

/** A bulkhead named `name`; fails when the settings are out of range. */
export const make = (name: string, options: Options): Effect.Effect<Bulkhead, InvalidBulkhead> => {
  const max = options.maxConcurrent
  const maxQueue = options.maxQueue ?? 0
  if (!Number.isInteger(max) || max < 1 || !Number.isInteger(maxQueue) || maxQueue < 0) {
    return Effect.fail(new InvalidBulkhead({ bulkhead: name, reason: "maxConcurrent must be an integer ≥ 1, maxQueue an integer ≥ 0" }))
  }
  const maxWait = options.maxWait === undefined ? undefined : Duration.decode(options.maxWait)
  return Effect.sync(() => {
    const compartments = new Map<string, Compartment>()
    const tags = [MetricLabel.make("bulkhead", name)]
    const waits = Metric.tagged(waitsTotal, "bulkhead", name)
    const queueFull = Metric.tagged(Metric.tagged(rejectionsTotal, "bulkhead", name), "reason", "queue-full")
    const waitTimeout = Metric.tagged(Metric.tagged(rejectionsTotal, "bulkhead", name), "reason", "wait-timeout")
    // The gauges are summed over keys and updated synchronously where the counts change: no extra effect per
    // call. Their registry entries are looked up once here: `unsafeUpdate` would find the hook through a
    // cache keyed by the labels array on every update, twice per call.
    const activeHook = Metric.globalMetricRegistry.getGauge(MetricKey.taggedWithLabels(activeKey, tags))
    const queuedHook = Metric.globalMetricRegistry.getGauge(MetricKey.taggedWithLabels(queuedKey, tags))
    let active = 0
    let queued = 0
    const gauges = () => {
      activeHook.update(active)
      queuedHook.update(queued)
    }

    const compartment = (key: string) => {
      let c = compartments.get(key)
      if (c === undefined) {
        if (compartments.size >= sweepAbove) {
          for (const [k, idle] of compartments) if (idle.active === 0 && idle.queue.length === 0) compartments.delete(k)
        }
        // Released synchronously in the exit handlers (which run uninterruptibly, inside the mask): one
        // runtime step per call, where `ensuring` would take several.
        const made: Compartment = {
          active: 0,
          queue: [],
          release: {
            onSuccess: (a) => (release(made), Effect.succeed(a)),
            onFailure: (cause) => (release(made), Effect.failCause(cause))
          }
        }
        compartments.set(key, made)
        c = made
      }
      return c
    }
    // Gives the slot to the oldest waiter, or frees it.
    const release = (c: Compartment) => {
      if (c.queue.length > 0) {
        const next = c.queue.shift()!
        queued--
        next.handed = true
        Deferred.unsafeDone(next.deferred, Exit.void)
        gauges()
      } else {
        c.active--
        // A slot freed with nobody queued changes only the active count.
        activeHook.update(--active)
      }
    }
    const full = (key: string, reason: BulkheadFull["reason"]) =>
      new BulkheadFull({ bulkhead: name, key, reason, maxConcurrent: max, maxQueue })

    const execute = <A, E, R>(self: Effect.Effect<A, E, R>, key = "*"): Effect.Effect<A, E | BulkheadFull, R> =>
      Effect.uninterruptibleMask((restore) => {
        const c = compartment(key)
        if (c.active < max) {
          c.active++
          activeHook.update(++active)
          return Effect.matchCauseEffect(restore(self), c.release) as Effect.Effect<A, E, R>
        }
        if (c.queue.length >= maxQueue) {
          return Effect.zipRight(
            Effect.all([
              Metric.increment(queueFull),
              Observe.emitWith("bulkhead", "rejected", () => ({ bulkhead: name, key, reason: "queue-full" })),
              Telemetry.spanEvent("bulwark.bulkhead.rejected", { [Telemetry.Attr.bulkhead]: name, reason: "queue-full" })
            ], { discard: true }),
            Effect.fail(full(key, "queue-full"))
          )
        }
        const waiter: Waiter = { deferred: Deferred.unsafeMake<void>(FiberId.none), handed: false }
        c.queue.push(waiter)
        queued++
        gauges()
        const wait = maxWait === undefined
          ? Deferred.await(waiter.deferred)
          : Effect.timeoutFail(Deferred.await(waiter.deferred), { duration: maxWait, onTimeout: () => full(key, "wait-timeout") })
        return Effect.zipRight(
          Effect.all([
            Metric.increment(waits),
            Observe.emitWith("bulkhead", "queued", () => ({ bulkhead: name, key, queued: c.queue.length }))
          ], { discard: true }),
          Effect.onExit(restore(Attempt.waiting(wait)), (exit) =>
            Effect.suspend(() => {
              if (Exit.isSuccess(exit)) return Effect.void
              if (waiter.handed) {
                // Handed a slot just as it gave up: pass the slot on.
                release(c)
              } else {
                const at = c.queue.indexOf(waiter)
                if (at >= 0) {
                  c.queue.splice(at, 1)
                  queued--
                  gauges()
                }
              }
              return Exit.isInterrupted(exit) ? Effect.void : Effect.zipRight(
                Metric.increment(waitTimeout),
                Telemetry.spanEvent("bulwark.bulkhead.rejected", { [Telemetry.Attr.bulkhead]: name, reason: "wait-timeout" })
              )
            })).pipe(
            Effect.zipRight(Effect.matchCauseEffect(restore(self), c.release) as Effect.Effect<A, E, R>)
          )
        )
      })

    const stats = (key = "*"): Stats => {
      const c = compartments.get(key)
      return c === undefined ? { active: 0, queued: 0 } : { active: c.active, queued: c.queue.length }
    }
    return { name, execute, stats }
  })
}

/** The bulkhead as handler middleware (stage `bulkhead`): each attempt takes a slot of `key(envelope)` (default `"*"`). */
export const middleware = (bulkhead: Bulkhead, options: { readonly key?: (envelope: Envelope.Envelope<any>) => string } = {}) =>
<A, E, R>(handler: Handler.Handler<A, E, R>): Handler.Handler<A, E | BulkheadFull, R> =>
  Handler.withStage(
    "bulkhead",
    handler,
    (envelope: Envelope.Envelope<A>) => bulkhead.execute(handler(envelope), options.key === undefined ? "*" : options.key(envelope))
  )
