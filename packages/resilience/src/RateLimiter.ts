/**
 * Rate limiters for outbound calls: a token bucket (bursts up to a capacity, a steady refill) or a sliding
 * window (never more than `limit` calls in any window of `window`), keyed (per partner, per tenant), local
 * or shared by every instance over one {@link RateLimiterStore} (memory, Redis, SQL).
 *
 * `acquire` waits for a permit up to a bound and fails with {@link RateLimited} beyond it; `tryAcquire`
 * answers at once. Waiting is a reservation: the store records the grant when it answers, the caller
 * sleeps until its time, so waiters queue in the store rather than poll it. A waiter interrupted while it
 * sleeps gives its permit back when no later reservation was built on it (the store's `release`); else the
 * permit stays taken: the limit errs on the safe side. Its wait is marked as a wait at a gate, so a hedge
 * around it starts its delay once the permit is granted, not while the call queues for it.
 *
 * As handler middleware it is the `rateLimit` stage: inside retry (each attempt takes a permit), outside
 * the breaker (its own throttling must not trip the breaker) and the last gate before the call (a permit
 * is used the moment it is granted, so the downstream sees the granted rate). See `Handler.stages`.
 */
import { Failure, Handler, Observe, Telemetry } from "@bulwark/core"
import type { Envelope } from "@bulwark/core"
import { Data, Duration, Effect, Metric, MetricLabel } from "effect"
import { dual } from "effect/Function"
import * as Attempt from "./internal/attempt.js"
import { type Decision, type Rule, RateLimiterStore, type RateLimiterStoreError } from "./RateLimiterStore.js"

/** The limit a limiter enforces. */
export type Limit =
  | {
    /** Up to `capacity` permits at once, then `permits` per `per` (one every `per / permits`). */
    readonly kind: "tokenBucket"
    readonly permits: number
    readonly per: Duration.DurationInput
    /** Burst size. Default `permits`. */
    readonly capacity?: number
  }
  | {
    /** Never more than `limit` permits in any window of length `window`. */
    readonly kind: "slidingWindow"
    readonly limit: number
    readonly window: Duration.DurationInput
  }

/** Settings of a limiter. */
export interface Options {
  readonly limit: Limit
  /** How long `acquire` waits for a permit before failing with {@link RateLimited}. Default 30 s. */
  readonly maxWait?: Duration.DurationInput
}

/** Settings of one `acquire`. */
export interface AcquireOptions {
  /** Permits taken at once. Default 1. */
  readonly permits?: number
  /** Overrides the limiter's `maxWait`. */
  readonly maxWait?: Duration.DurationInput
}

/** No permit within the wait bound. Transient, category `dependency`, `retryAfter` when one would be free. */
export class RateLimited extends Data.TaggedError("RateLimited")<{
  readonly limiter: string
  readonly key: string
  readonly retryAfter: Duration.Duration
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency", retryAfter: this.retryAfter }
  }
  override get message(): string {
    return `rate limit ${this.limiter} (${this.key}) reached; a permit is free in ${Duration.format(this.retryAfter)}`
  }
}

/** A limit that cannot be enforced (non-positive or non-finite figures), or a request for more permits than it ever grants at once. */
export class InvalidLimit extends Data.TaggedError("InvalidLimit")<{
  readonly limiter: string
  readonly reason: string
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: "unknown" }
  }
  override get message(): string {
    return `rate limit ${this.limiter}: ${this.reason}`
  }
}

/** A rate limiter; every instance made with one name over one store shares each key's limit. */
export interface RateLimiter {
  readonly name: string
  readonly rule: Rule
  /** The wait bound of an `acquire` that names none (`Options.maxWait`). */
  readonly maxWait: Duration.Duration
  /** Waits for `permits` under `key` (default `"*"`) up to the wait bound. */
  readonly acquire: (
    key?: string,
    options?: AcquireOptions
  ) => Effect.Effect<void, RateLimited | InvalidLimit | RateLimiterStoreError>
  /** Takes `permits` under `key` if they are free now; answers whether it did. */
  readonly tryAcquire: (key?: string, permits?: number) => Effect.Effect<boolean, InvalidLimit | RateLimiterStoreError>
  /** Runs `self` once `permits` under `key` are granted (one step fewer than `acquire` then `self`). */
  readonly withPermit: <A, E, R>(
    self: Effect.Effect<A, E, R>,
    key?: string,
    options?: AcquireOptions
  ) => Effect.Effect<A, E | RateLimited | InvalidLimit | RateLimiterStoreError, R>
}

/** Counter of permits granted, tagged `limiter`. */
export const permitsTotal = Metric.counter("bulwark_rate_limit_permits_total", {
  description: "Permits granted by a rate limiter",
  incremental: true
})
/** Counter of acquisitions that had to wait, tagged `limiter`. */
export const waitsTotal = Metric.counter("bulwark_rate_limit_waits_total", {
  description: "Rate limiter acquisitions that waited for a permit",
  incremental: true
})
/** Histogram of waits for a permit in seconds, tagged `limiter` (only acquisitions that waited). */
export const waitSeconds = Metric.histogram(
  "bulwark_rate_limit_wait_seconds",
  Telemetry.latencyBoundaries,
  "Time an acquisition waited for a permit, in seconds"
)
/** Counter of acquisitions refused (no permit within the bound), tagged `limiter`. */
export const rejectionsTotal = Metric.counter("bulwark_rate_limit_rejections_total", {
  description: "Rate limiter acquisitions refused",
  incremental: true
})

const positive = (n: number) => Number.isFinite(n) && n > 0

/** Resolves a limit to the rule stores enforce. */
export const resolveLimit = (name: string, limit: Limit): Effect.Effect<Rule, InvalidLimit> => {
  if (limit.kind === "tokenBucket") {
    const per = Duration.toMillis(limit.per)
    const capacity = limit.capacity ?? limit.permits
    if (!positive(limit.permits) || !positive(per) || !Number.isInteger(capacity) || capacity < 1) {
      return Effect.fail(new InvalidLimit({ limiter: name, reason: "a token bucket needs permits > 0, per > 0 and an integer capacity ≥ 1" }))
    }
    return Effect.succeed({ kind: "tokenBucket", capacity, intervalMillis: per / limit.permits })
  }
  const windowMillis = Duration.toMillis(limit.window)
  if (!Number.isInteger(limit.limit) || limit.limit < 1 || !positive(windowMillis) || !Number.isInteger(windowMillis)) {
    return Effect.fail(new InvalidLimit({ limiter: name, reason: "a sliding window needs an integer limit ≥ 1 and a window of whole milliseconds > 0" }))
  }
  return Effect.succeed({ kind: "slidingWindow", limit: limit.limit, windowMillis })
}

/** A limiter named `name` over the {@link RateLimiterStore} in context. */
export const make = (name: string, options: Options): Effect.Effect<RateLimiter, InvalidLimit, RateLimiterStore> =>
  Effect.gen(function*() {
    const store = yield* RateLimiterStore
    const rule = yield* resolveLimit(name, options.limit)
    const most = rule.kind === "tokenBucket" ? rule.capacity : rule.limit
    const defaultWait = Duration.toMillis(options.maxWait ?? "30 seconds")
    const waits = Metric.tagged(waitsTotal, "limiter", name)
    const waited = Metric.tagged(waitSeconds, "limiter", name)
    const rejections = Metric.tagged(rejectionsTotal, "limiter", name)
    const storeKey = (key: string) => `${name}:${key}`
    const tooMany = (n: number) =>
      new InvalidLimit({ limiter: name, reason: `${n} permits requested, at most ${most} are ever granted at once` })

    // A permit granted at once is the hot path: its count is recorded synchronously, with no extra effect,
    // and a store that decides in-process (memory) is asked synchronously, so such a permit costs one step.
    // One labels array for the limiter: the metric caches its hook by the array, where `Metric.tagged` would
    // build a new array and look the hook up in the registry on every update.
    const limiterTags: ReadonlyArray<MetricLabel.MetricLabel> = [MetricLabel.make("limiter", name)]
    const unsafeReserve = store.unsafeReserve
    // Gives back a permit its waiter abandoned; a store that cannot be reached leaves it taken (the safe side).
    const giveBack = (key: string, n: number, at: number) =>
      store.release(storeKey(key), rule, n, at).pipe(
        Effect.catchAll((cause) => Effect.logWarning("rate limiter: giving back an abandoned permit failed; it stays taken", cause))
      )
    const wait = (decision: Extract<Decision, { granted: true }>, key: string, n: number): Effect.Effect<void> =>
      Effect.zipRight(
        Effect.all([
          Metric.increment(waits),
          Metric.update(waited, decision.waitMillis / 1000),
          Telemetry.spanEvent("bulwark.rate_limit.wait", { [Telemetry.Attr.rateLimiter]: name, "bulwark.rate_limit.wait_ms": decision.waitMillis }),
          Observe.emitWith("rate-limit", "wait", () => ({ limiter: name, key, waitMs: decision.waitMillis }))
        ], { discard: true }),
        // Marked as a wait at a gate (a hedge does not count it), and given back when the waiter is
        // interrupted before its time, so a hedge that lost, or a timeout, does not burn the permit.
        Attempt.waiting(Effect.onInterrupt(Effect.sleep(Duration.millis(decision.waitMillis)), () => giveBack(key, n, decision.at)))
      )
    const refused = (decision: Extract<Decision, { granted: false }>, key: string) =>
      Effect.zipRight(
        Effect.all([
          Metric.increment(rejections),
          Telemetry.spanEvent("bulwark.rate_limit.rejected", { [Telemetry.Attr.rateLimiter]: name }),
          Observe.emitWith("rate-limit", "rejected", () => ({ limiter: name, key, retryAfterMs: decision.retryAfterMillis }))
        ], { discard: true }),
        Effect.fail(new RateLimited({ limiter: name, key, retryAfter: Duration.millis(Math.ceil(decision.retryAfterMillis)) }))
      )
    // What follows a decision: nothing for a permit granted now (undefined), else the wait or the refusal.
    const slowPath = (decision: Decision, key: string, n: number): Effect.Effect<void, RateLimited> | undefined => {
      if (!decision.granted) return refused(decision, key)
      permitsTotal.unsafeUpdate(n, limiterTags)
      return decision.waitMillis <= 0 ? undefined : wait(decision, key, n)
    }

    const withPermit = <A, E, R>(self: Effect.Effect<A, E, R>, key = "*", acquireOptions?: AcquireOptions) => {
      const n = acquireOptions?.permits ?? 1
      if (!Number.isInteger(n) || n < 1 || n > most) return Effect.fail(tooMany(n))
      const maxWait = acquireOptions?.maxWait === undefined ? defaultWait : Duration.toMillis(acquireOptions.maxWait)
      const k = storeKey(key)
      if (unsafeReserve !== undefined) {
        return Effect.suspend((): Effect.Effect<A, E | RateLimited, R> => {
          const next = slowPath(unsafeReserve(k, rule, n, maxWait), key, n)
          return next === undefined ? self : Effect.zipRight(next, self)
        })
      }
      return Effect.flatMap(store.reserve(k, rule, n, maxWait), (decision): Effect.Effect<A, E | RateLimited, R> => {
        const next = slowPath(decision, key, n)
        return next === undefined ? self : Effect.zipRight(next, self)
      })
    }
    const acquire = (key = "*", acquireOptions?: AcquireOptions) => withPermit(Effect.void, key, acquireOptions)
    const tryAcquire = (key = "*", n = 1) => {
      if (!Number.isInteger(n) || n < 1 || n > most) return Effect.fail(tooMany(n))
      const answer = (decision: Decision) =>
        decision.granted
          ? (permitsTotal.unsafeUpdate(n, limiterTags), Effect.succeed(true))
          : Effect.as(Effect.zipRight(Metric.increment(rejections), Observe.emitWith("rate-limit", "rejected", () => ({ limiter: name, key }))), false)
      const k = storeKey(key)
      return unsafeReserve !== undefined
        ? Effect.suspend(() => answer(unsafeReserve(k, rule, n, 0)))
        : Effect.flatMap(store.reserve(k, rule, n, 0), answer)
    }
    return { name, rule, maxWait: Duration.millis(defaultWait), acquire, tryAcquire, withPermit }
  })

/** Runs `self` once a permit under `key` is granted: the limiter around any Effect. */
export const withPermit: {
  (limiter: RateLimiter, key?: string, options?: AcquireOptions): <A, E, R>(
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | RateLimited | InvalidLimit | RateLimiterStoreError, R>
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    limiter: RateLimiter,
    key?: string,
    options?: AcquireOptions
  ): Effect.Effect<A, E | RateLimited | InvalidLimit | RateLimiterStoreError, R>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R>(self: Effect.Effect<A, E, R>, limiter: RateLimiter, key?: string, options?: AcquireOptions) =>
    limiter.withPermit(self, key, options)
)

/** The limiter as handler middleware (stage `rateLimit`): each attempt takes a permit under `key(envelope)` (default `"*"`). */
export const middleware = (limiter: RateLimiter, options: { readonly key?: (envelope: Envelope.Envelope<any>) => string } & AcquireOptions = {}) =>
<A, E, R>(handler: Handler.Handler<A, E, R>): Handler.Handler<A, E | RateLimited | InvalidLimit | RateLimiterStoreError, R> =>
  Handler.withStage(
    "rateLimit",
    handler,
    (envelope: Envelope.Envelope<A>) => limiter.withPermit(handler(envelope), options.key === undefined ? "*" : options.key(envelope), options)
  )
