/**
 * The idempotency port: claim a key before doing work, complete it with the outcome, release it after a
 * failure. A claim is a lease: if the worker dies, the lease expires and another worker takes over with a
 * new fencing token, and the old token can no longer complete or release the key.
 *
 * Every key lives for a retention window after its last change and is then evicted, so the store stays
 * bounded. **Retention must outlive the redelivery and replay horizon**: a duplicate that arrives after
 * its key was evicted runs again. Size it beyond the transport's longest redelivery delay × attempts and
 * beyond how long dead-lettered messages may wait before being replayed.
 */
import { Context, Data, Duration, Effect, Metric, Option, Schema } from "effect"
import { Failure, Observe, Telemetry } from "@bulwark/core"

/** You own the key until `leaseUntil`; complete or release it with `token`. */
export interface Fresh {
  readonly _tag: "Fresh"
  /** The fencing token: grows with every takeover of the key. */
  readonly token: number
  /** When the lease ends (epoch milliseconds, the driver's clock). */
  readonly leaseUntil: number
}

/** Another worker holds a live lease on the key. */
export interface InProgress {
  readonly _tag: "InProgress"
  /** When that lease ends (epoch milliseconds, the driver's clock). */
  readonly leaseUntil: number
  /** How long until then, from the driver's point of view. */
  readonly remaining: Duration.Duration
}

/** The key's work is done; `outcome` is what `complete` stored (JSON). */
export interface Completed {
  readonly _tag: "Completed"
  readonly outcome: unknown
}

/** The answer to a claim. */
export type Claim = Fresh | InProgress | Completed

/** Builds a {@link Fresh} answer. */
export const fresh = (token: number, leaseUntil: number): Claim => ({ _tag: "Fresh", token, leaseUntil })
/** Builds an {@link InProgress} answer. */
export const inProgress = (leaseUntil: number, now: number): Claim => ({
  _tag: "InProgress",
  leaseUntil,
  remaining: Duration.millis(Math.max(0, leaseUntil - now))
})
/** Builds a {@link Completed} answer. */
export const completed = (outcome: unknown): Claim => ({ _tag: "Completed", outcome })

/** Options of a claim. */
export interface ClaimOptions {
  /** How long the claimant owns the key before another worker may take over. */
  readonly lease: Duration.DurationInput
  /** How long the key is remembered after its last change. Default {@link defaultRetention}. */
  readonly retention?: Duration.DurationInput
}

/** The default retention: one day. */
export const defaultRetention: Duration.Duration = Duration.days(1)

/** The store could not be reached or answered nonsense. Transient, category `dependency`. */
export class IdempotencyStoreError extends Data.TaggedError("IdempotencyStoreError")<{
  readonly operation: "claim" | "complete" | "release" | "purge"
  readonly key: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }
  override get message(): string {
    return `idempotency store ${this.operation} of "${this.key}" failed: ${String(this.cause)}`
  }
}

/**
 * `complete` or `release` with a token that no longer owns the key: the lease expired and another worker
 * took over (or the key was evicted). The work may have run twice — the lease was too short for it.
 * Transient: the redelivered message finds the new owner's result.
 */
export class LeaseLostError extends Data.TaggedError("LeaseLostError")<{
  readonly key: string
  readonly token: number
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "unknown" }
  }
  override get message(): string {
    return `idempotency key "${this.key}" is no longer owned by token ${this.token} (lease expired and taken over)`
  }
}

/**
 * A duplicate arrived while the first run still holds the key. Transient with `retryAfter` = the rest of
 * that lease, so a pipeline nacks it with that delay instead of running it twice.
 */
export class InProgressError extends Data.TaggedError("IdempotencyInProgressError")<{
  readonly key: string
  readonly retryAfter: Duration.Duration
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "unknown", retryAfter: this.retryAfter }
  }
  override get message(): string {
    return `idempotency key "${this.key}" is being processed elsewhere; retry in ${Duration.format(this.retryAfter)}`
  }
}

/** The stored outcome does not decode with the schema given to {@link run}. */
export class OutcomeDecodeError extends Data.TaggedError("IdempotencyOutcomeDecodeError")<{
  readonly key: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: "schema" }
  }
  override get message(): string {
    return `stored outcome of "${this.key}" does not match the schema: ${String(this.cause)}`
  }
}

/** The idempotency port. */
export class IdempotencyStore extends Context.Tag("@bulwark/idempotency/IdempotencyStore")<IdempotencyStore, {
  /** Atomically claims `key`: Fresh (yours), InProgress (someone's live lease) or Completed (the stored outcome). */
  readonly claim: (key: string, options: ClaimOptions) => Effect.Effect<Claim, IdempotencyStoreError>
  /** Records the outcome (JSON-safe) of the owner's work; the key then answers Completed until evicted. */
  readonly complete: (
    key: string,
    token: number,
    outcome: unknown
  ) => Effect.Effect<void, IdempotencyStoreError | LeaseLostError>
  /** Gives the key back after a failure so a retry can claim it at once. */
  readonly release: (key: string, token: number) => Effect.Effect<void, IdempotencyStoreError | LeaseLostError>
  /** Evicts every key past its retention now; answers how many (drivers also do this on their own). */
  readonly purgeExpired: Effect.Effect<number, IdempotencyStoreError>
}>() {}

/** The service an `IdempotencyStore` driver implements. */
export interface Service extends Context.Tag.Service<IdempotencyStore> {}

/** Serialises an outcome for storage; a value JSON cannot hold (a BigInt, a cycle) is a typed error, not a throw. */
export const encodeOutcome = (key: string, outcome: unknown): Effect.Effect<string, IdempotencyStoreError> =>
  Effect.try({
    try: () => JSON.stringify(outcome ?? null),
    catch: (cause) => new IdempotencyStoreError({ operation: "complete", key, cause })
  })

/** Duplicates that found a completed key or a live lease: the runbook's duplicate-spike signal. */
export const hitsTotal = Metric.counter("bulwark_idempotency_hits_total", {
  description: "Duplicates detected by the idempotency store, by state (completed, in_progress)",
  incremental: true
})
/** Keys claimed fresh (first runs and takeovers). */
export const claimsTotal = Metric.counter("bulwark_idempotency_claims_total", {
  description: "Idempotency keys claimed fresh",
  incremental: true
})
/** Completions rejected because the lease had been taken over. */
export const leaseLostTotal = Metric.counter("bulwark_idempotency_lease_lost_total", {
  description: "Completions or releases rejected because the lease was lost",
  incremental: true
})

/** Counts one claim answer in the metrics. */
export const recordClaim = (claim: Claim): Effect.Effect<void> => {
  switch (claim._tag) {
    case "Fresh":
      return Metric.increment(claimsTotal)
    case "Completed":
      return Metric.increment(Metric.tagged(hitsTotal, "state", "completed"))
    case "InProgress":
      return Metric.increment(Metric.tagged(hitsTotal, "state", "in_progress"))
  }
}

const claimOutcome = { Fresh: "fresh", InProgress: "in-progress", Completed: "completed" } as const

const suppressed = Metric.tagged(Telemetry.duplicatesSuppressed, "stage", "idempotency")

/**
 * Records a claim answer on the current (`idempotency.claim`) span; a completed key is a suppressed duplicate.
 * Keys are not recorded: they may be business keys.
 */
const annotateClaim = (claim: Claim): Effect.Effect<void> =>
  Effect.zipRight(
    Telemetry.annotate({
      [Telemetry.Attr.idempotencyOutcome]: claimOutcome[claim._tag],
      [Telemetry.Attr.idempotencyHit]: claim._tag !== "Fresh"
    }),
    claim._tag === "Completed" ? Metric.increment(suppressed) : Effect.void
  )

/** Counts one claim answer and announces it (`idempotency` `claim`). */
const noteClaim = (key: string, claim: Claim): Effect.Effect<void> =>
  Effect.zipRight(
    Effect.zipRight(recordClaim(claim), annotateClaim(claim)),
    Observe.emitWith("idempotency", "claim", () => ({
      key,
      outcome: claimOutcome[claim._tag],
      ...(claim._tag === "Fresh" ? { token: claim.token } : {})
    }))
  )

/** Counts a lost lease and announces it (`idempotency` `lease-lost`). */
const noteLeaseLost = (key: string, operation: "complete" | "release"): Effect.Effect<void> =>
  Effect.zipRight(Metric.increment(leaseLostTotal), Observe.emitWith("idempotency", "lease-lost", () => ({ key, operation })))

/**
 * Completes `key` with the owner's outcome, counting and announcing a lost lease (`lease-lost`) or the
 * completion (`complete`). What `run` and the `idempotent` middleware complete through.
 */
export const completeObserved = (
  store: Service,
  key: string,
  token: number,
  outcome: unknown
): Effect.Effect<void, IdempotencyStoreError | LeaseLostError> =>
  store.complete(key, token, outcome).pipe(
    Effect.tapErrorTag("LeaseLostError", () => noteLeaseLost(key, "complete")),
    Effect.zipRight(Observe.emitWith("idempotency", "complete", () => ({ key, token })))
  )

/** How a duplicate that finds a live lease is treated by {@link run} and the middleware. */
export interface WaitOptions {
  /** `"wait"` polls until the first run finishes (bounded by `maxWait`); `"nack"` fails at once. Default `"wait"`. */
  readonly onInProgress?: "wait" | "nack"
  /** The longest a duplicate waits before failing with {@link InProgressError}. Default: the lease. */
  readonly maxWait?: Duration.DurationInput
}

/**
 * Claims `key`, waiting for a live lease held by someone else when asked to. Answers Fresh or Completed,
 * or fails with {@link InProgressError} carrying the remaining lease as a retry delay.
 */
export const claimOrWait = (
  key: string,
  options: ClaimOptions & WaitOptions
): Effect.Effect<Fresh | Completed, IdempotencyStoreError | InProgressError, IdempotencyStore> =>
  Effect.gen(function*() {
    const store = yield* IdempotencyStore
    const maxWait = Duration.decode(options.maxWait ?? options.lease)
    const first = yield* Effect.tap(store.claim(key, options), (claim) => noteClaim(key, claim))
    if (first._tag !== "InProgress") return first
    if (options.onInProgress === "nack" || Duration.isZero(maxWait)) {
      return yield* Effect.fail(new InProgressError({ key, retryAfter: first.remaining }))
    }
    yield* Observe.emitWith("idempotency", "wait", () => ({ key, maxWaitMs: Duration.toMillis(maxWait) }))
    // Poll with a short capped backoff: a duplicate is usually a sibling delivery racing the first run.
    const poll = (delay: number): Effect.Effect<Claim, IdempotencyStoreError> =>
      Effect.flatMap(Effect.zipRight(Effect.sleep(Duration.millis(delay)), store.claim(key, options)), (claim) =>
        claim._tag === "InProgress" ? poll(Math.min(250, delay * 2)) : Effect.succeed(claim))
    const polled = yield* Effect.timeoutOption(poll(10), maxWait)
    if (Option.isSome(polled) && polled.value._tag !== "InProgress") {
      yield* noteClaim(key, polled.value)
      return polled.value
    }
    return yield* Effect.fail(new InProgressError({ key, retryAfter: first.remaining }))
  }).pipe(Telemetry.withSafeSpan("idempotency.claim", { kind: "internal" }))

/** Options of {@link run}. */
export interface RunOptions extends ClaimOptions, WaitOptions {}

/**
 * Runs `effect` at most once per `key` (while the key is retained): the first caller runs it and stores
 * its result encoded with `outcome`; duplicates get the stored result decoded, without running it. A
 * failure releases the key so a retry may run again.
 */
export const run = <A, I, E, R, RS>(
  key: string,
  effect: Effect.Effect<A, E, R>,
  outcome: Schema.Schema<A, I, RS>,
  options: RunOptions
): Effect.Effect<
  A,
  E | IdempotencyStoreError | InProgressError | LeaseLostError | OutcomeDecodeError,
  R | RS | IdempotencyStore
> =>
  Effect.gen(function*() {
    const store = yield* IdempotencyStore
    const claim = yield* claimOrWait(key, options)
    if (claim._tag === "Completed") {
      return yield* Schema.decodeUnknown(outcome)(claim.outcome).pipe(
        Effect.mapError((cause) => new OutcomeDecodeError({ key, cause }))
      )
    }
    const value = yield* Effect.onError(effect, () => releaseQuietly(store, key, claim.token))
    const encoded = yield* Schema.encode(outcome)(value).pipe(
      Effect.mapError((cause) => new OutcomeDecodeError({ key, cause })),
      Effect.onError(() => releaseQuietly(store, key, claim.token))
    )
    yield* completeObserved(store, key, claim.token, encoded)
    return value
  })

/**
 * Releases after a failure. The caller's own failure is what must propagate; a release that fails only
 * delays the next attempt until the lease expires, so it is logged, not raised.
 */
export const releaseQuietly = (
  store: Service,
  key: string,
  token: number
): Effect.Effect<void> =>
  store.release(key, token).pipe(
    Effect.zipRight(Observe.emitWith("idempotency", "release", () => ({ key, token }))),
    Effect.catchAll((error) =>
      Effect.zipRight(
        error._tag === "LeaseLostError" ? noteLeaseLost(key, "release") : Effect.void,
        Effect.logWarning("idempotency release failed; the key frees itself when the lease expires", error).pipe(
          Effect.annotateLogs({ key })
        )
      )
    )
  )
