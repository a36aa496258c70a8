/**
 * The dead-letter store: messages Bulwark gave up on, kept whole (payload, headers, key, id) with why,
 * so an operator can triage them by category, inspect them and replay them to where they came from.
 *
 * "A DLQ is not a garbage bin": every entry is either replayed or purged by a retention rule, and
 * {@link alerts} fires when the number of entries awaiting triage crosses a threshold.
 */
import { Delivery, Failure } from "@bulwark/core"
import { Context, Data, Duration, Effect, Layer, Option, Schema } from "effect"
import { createHash } from "node:crypto"

/** Where an entry is in its replay life: waiting, being published right now, or published. */
export const ReplayStatus = Schema.Literal("pending", "replaying", "replayed")
/** Where an entry is in its replay life. */
export type ReplayStatus = typeof ReplayStatus.Type

/** One dead-lettered message, as persisted. */
export class DeadLetterEntry extends Schema.Class<DeadLetterEntry>("@bulwark/dead-letter/DeadLetterEntry")({
  /** The entry's own id (what `bulwark dlq show` takes). */
  id: Schema.String,
  /** The message (envelope) id; one entry per origin topic and message id. */
  messageId: Schema.String,
  /** The topic the message was consumed from, and is replayed to. */
  originTopic: Schema.String,
  /** The ordering key (the envelope's subject). */
  key: Schema.String,
  /** The message bytes exactly as received (CloudEvents JSON for Bulwark producers). */
  payload: Schema.Uint8ArrayFromBase64,
  /** The message headers (trace context, correlation id, …), dead-letter headers removed. */
  headers: Schema.Record({ key: Schema.String, value: Schema.String }),
  /** The envelope type when the payload is a readable CloudEvent, for filtering. */
  type: Schema.NullOr(Schema.String),
  /** The triage category. */
  category: Failure.Category,
  /** The last error. */
  error: Failure.FailureRecord,
  /** Deliveries attempted before giving up (the last time it was dead-lettered). */
  attempts: Schema.Int,
  /** When the message was first dead-lettered. */
  firstFailedAt: Schema.DateTimeUtc,
  /** When it was last dead-lettered (again after a replay that failed too). */
  lastFailedAt: Schema.DateTimeUtc,
  replay: ReplayStatus,
  /** When it was last replayed. */
  replayedAt: Schema.NullOr(Schema.DateTimeUtc),
  /** How many times it has been replayed. */
  replayCount: Schema.Int
}) {}

/**
 * An entry taken for replay, with the claim's fencing token: every claim of an entry gets a larger token, so
 * a replayer whose lease ran out (and whose entry someone else has claimed since) cannot mark or release it.
 */
export class ClaimedEntry extends DeadLetterEntry.extend<ClaimedEntry>("@bulwark/dead-letter/ClaimedEntry")({
  /** The claim's fencing token; pass the claimed entry (or `{ id, claimToken }`) to `markReplayed`/`releaseReplay`. */
  claimToken: Schema.Int
}) {}

/** What `markReplayed` and `releaseReplay` act on: a claim (fenced by its token), or a bare id (the current claim, unfenced). */
export type ReplayClaim = string | { readonly id: string; readonly claimToken: number }

/** The entry id of a {@link ReplayClaim}. */
export const claimId = (claim: ReplayClaim): string => typeof claim === "string" ? claim : claim.id

/** The fencing token of a {@link ReplayClaim}, `undefined` for a bare id. */
export const claimToken = (claim: ReplayClaim): number | undefined => typeof claim === "string" ? undefined : claim.claimToken

/** Header set on a replayed message: the entry it came from. */
export const ReplayedFromHeader = "bulwark-replayed-from"
/** Header set on a replayed message: which replay of its entry it is (1 for the first). */
export const ReplayGenerationHeader = "bulwark-replay-generation"

/**
 * What a message's headers say about its replay history: the entry it was replayed from and which replay
 * of it it is, each `undefined` when the header is absent (a copy of a replayed message written before
 * generation headers existed has the entry but no generation).
 */
export const replayOrigin = (
  headers: Readonly<Record<string, string>>
): { readonly entryId: string | undefined; readonly generation: number | undefined } => {
  const raw = headers[ReplayGenerationHeader]
  const parsed = raw === undefined ? NaN : Number(raw)
  return { entryId: headers[ReplayedFromHeader], generation: Number.isInteger(parsed) && parsed >= 0 ? parsed : undefined }
}

/**
 * The replay generation of a transport's dead-lettered copy, read from its headers: 0 for a message never
 * replayed (no `bulwark-replayed-from`), `n` for the n-th replay, `undefined` when it cannot be told.
 */
export const copyGeneration = (headers: Readonly<Record<string, string>>): number | undefined => {
  const origin = replayOrigin(headers)
  return origin.entryId === undefined ? 0 : origin.generation
}

/**
 * Whether a dead-lettering of replay generation `generation` changes an entry already stored. Older than
 * the entry's last replay: a stale copy (a drain that crashed between storing and acking got it again),
 * ignored so it cannot revive a replayed entry. Newer: the replay failed again, so the entry is pending
 * again. The same generation: new unless the entry is being replayed right now, when it is a redelivered
 * copy of the failure that claim is replaying. Unknown (`undefined`): always new, as the middleware, which
 * sees a failure as it happens but not the transport headers that tell generations apart, reports them.
 */
export const isNewFailure = (
  entry: { readonly replay: ReplayStatus; readonly replayCount: number },
  generation: number | undefined
): boolean =>
  generation === undefined || generation > entry.replayCount ||
  (generation === entry.replayCount && entry.replay !== "replaying")

/** What is added to the store: the message and why it was given up on. */
export interface NewEntry {
  readonly message: Delivery.Message
  readonly category: Failure.Category
  readonly error: Failure.FailureRecord
  readonly attempts: number
  /**
   * Which replay of its entry the failed message was (0: the original), when known: `DeadLetter.drain`
   * reads it from a copy's headers ({@link copyGeneration}). Known, a copy older than the entry's last
   * replay leaves the entry as it is; unknown, every add is a new failure. Default: the message's
   * `bulwark-replay-generation` header, else unknown.
   */
  readonly replayGeneration?: number | undefined
}

/** A filter over entries; every field narrows, none means all. */
export interface Filter {
  readonly category?: Failure.Category
  readonly type?: string
  readonly originTopic?: string
  /** One status, or any of several. */
  readonly replay?: ReplayStatus | ReadonlyArray<ReplayStatus>
  /** Last failed at or after. */
  readonly from?: import("effect").DateTime.Utc
  /** Last failed before. */
  readonly to?: import("effect").DateTime.Utc
  /** Only the failure group with this fingerprint (see {@link fingerprintOf}). */
  readonly fingerprint?: string
  readonly limit?: number
}

/**
 * Entries that failed the same way: the same error type, the same message once ids and numbers are
 * normalised away ({@link messageTemplate}), on the same origin topic. Triaged, and replayed, as one
 * (ServicePulse's retry groups).
 */
export interface FailureGroup {
  /** What `replay --group` takes: a hash of the error type, the message template and the topic. */
  readonly fingerprint: string
  readonly errorTag: string
  /** The error message with ids and numbers replaced by placeholders. */
  readonly template: string
  readonly originTopic: string
  /** The category of the group's oldest entry. */
  readonly category: Failure.Category
  /** Entries in the group (among those the filter admits). */
  readonly count: number
  readonly firstFailedAt: import("effect").DateTime.Utc
  readonly lastFailedAt: import("effect").DateTime.Utc
  /** The group's oldest entry, to inspect with `show`. */
  readonly sampleId: string
}

const uuid = /\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi
// Long hex runs with at least one digit and one letter: hashes, object ids, trace ids.
const hex = /\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b/gi
// Prefixed ids such as ord_123, cus_9aF2, msg-42x.
const prefixedId = /\b[A-Za-z]+[_-](?=[A-Za-z0-9]*\d)[A-Za-z0-9]+\b/g
const number = /\d+(?:\.\d+)?/g

/** An error message with what varies between occurrences (ids, numbers) replaced by placeholders. */
export const messageTemplate = (message: string): string =>
  message
    .replace(uuid, "<uuid>")
    .replace(hex, "<hex>")
    .replace(prefixedId, "<id>")
    .replace(number, "<n>")
    .replace(/\s+/g, " ")
    .trim()
    .slice(0, 500)

/** The failure group of an error on a topic: a stable hash of the error type, message template and topic. */
export const fingerprintOf = (error: { readonly tag: string; readonly message: string }, originTopic: string): string =>
  createHash("sha256").update(`${error.tag}\n${messageTemplate(error.message)}\n${originTopic}`).digest("hex").slice(0, 16)

/** The group an entry belongs to, described from the entry itself. */
export const groupOf = (entry: DeadLetterEntry, count: number, firstFailedAt: import("effect").DateTime.Utc, lastFailedAt: import("effect").DateTime.Utc): FailureGroup => ({
  fingerprint: fingerprintOf(entry.error, entry.originTopic),
  errorTag: entry.error.tag,
  template: messageTemplate(entry.error.message),
  originTopic: entry.originTopic,
  category: entry.category,
  count,
  firstFailedAt,
  lastFailedAt,
  sampleId: entry.id
})

/** The store failed. Transient, category `dependency`. */
export class DeadLetterStoreError extends Data.TaggedError("DeadLetterStoreError")<{
  readonly operation: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }
  override get message(): string {
    const cause = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `dead-letter store ${this.operation} failed: ${cause}`
  }
}

/** No entry has this id. */
export class EntryNotFoundError extends Data.TaggedError("EntryNotFoundError")<{ readonly id: string }> {
  override get message(): string {
    return `no dead-letter entry with id ${this.id}`
  }
}

/** The dead-letter port. */
export class DeadLetterStore extends Context.Tag("@bulwark/dead-letter/DeadLetterStore")<DeadLetterStore, {
  /**
   * Stores a message; the same origin topic + message id, or a replayed message (by its
   * `bulwark-replayed-from` header), updates its entry (last failure, back to pending) — unless the copy is
   * stale (see {@link isNewFailure}), when the entry is answered unchanged.
   */
  readonly add: (entry: NewEntry) => Effect.Effect<DeadLetterEntry, DeadLetterStoreError>
  /** Entries matching the filter, oldest first failure first. */
  readonly list: (filter?: Filter) => Effect.Effect<ReadonlyArray<DeadLetterEntry>, DeadLetterStoreError>
  /** One entry. */
  readonly get: (id: string) => Effect.Effect<Option.Option<DeadLetterEntry>, DeadLetterStoreError>
  /** Entries not yet replayed: the alert signal. */
  readonly depth: Effect.Effect<number, DeadLetterStoreError>
  /**
   * Atomically takes an entry for replay (pending, or replaying with a claim older than `lease`): `None` when
   * it is replayed or someone else is replaying it — which is what makes replay publish once. The entry comes
   * with a fencing token larger than any earlier claim's.
   */
  readonly claimReplay: (
    id: string,
    lease: Duration.DurationInput
  ) => Effect.Effect<Option.Option<ClaimedEntry>, DeadLetterStoreError>
  /**
   * Marks a claimed entry as replayed; `false` (and nothing changes) when the claim is no longer the newest —
   * its lease ran out and the entry was claimed again, or a new dead-lettering made it pending. A bare id
   * marks whatever claim the entry has.
   */
  readonly markReplayed: (claim: ReplayClaim) => Effect.Effect<boolean, DeadLetterStoreError>
  /** Gives a claimed entry back (its publish failed); `false` (and nothing changes) when the claim is no longer the newest. */
  readonly releaseReplay: (claim: ReplayClaim) => Effect.Effect<boolean, DeadLetterStoreError>
  /** Deletes entries last failed before `before`; answers how many. */
  readonly purge: (before: import("effect").DateTime.Utc) => Effect.Effect<number, DeadLetterStoreError>
  /**
   * The failure groups among the entries the filter admits (its `limit` caps the groups), largest first.
   * Default filter: entries not replayed yet.
   */
  readonly groups: (filter?: Filter) => Effect.Effect<ReadonlyArray<FailureGroup>, DeadLetterStoreError>
  /**
   * Reserves the next replay publish slot shared by every replayer over this store: answers the time (epoch
   * millis, Effect `Clock`) the caller may publish at — now, or `spacing` after the slot handed out before.
   * Replayers sleep until their slot, so together they publish at most one message per `spacing`.
   */
  readonly takeReplaySlot: (spacing: Duration.DurationInput) => Effect.Effect<number, DeadLetterStoreError>
}>() {}

/** The service a `DeadLetterStore` driver implements. */
export interface Service extends Context.Tag.Service<DeadLetterStore> {}

// The replay headers too: an entry keeps the message's own headers, and each replay sets them afresh.
const stripped = new Set<string>([...Object.values(Delivery.DeadLetterHeaders), ReplayedFromHeader, ReplayGenerationHeader])

/** Headers without the transport's dead-letter and replay bookkeeping (kept in the entry's own fields instead). */
export const originalHeaders = (headers: Readonly<Record<string, string>>): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) if (!stripped.has(name)) out[name] = value
  return out
}

const decoder = new TextDecoder()

/** The CloudEvents `type` of a payload, when it is readable JSON carrying one. */
export const typeOf = (payload: Uint8Array): string | null => {
  try {
    const json = JSON.parse(decoder.decode(payload)) as unknown
    const type = typeof json === "object" && json !== null ? (json as { type?: unknown }).type : undefined
    return typeof type === "string" ? type : null
  } catch {
    return null
  }
}

/**
 * The CloudEvents `dataschema` of a payload (the contract id and version it was written with), when it is
 * readable JSON carrying one: what `bulwark dlq show` prints as the message's schema version.
 */
export const dataschemaOf = (payload: Uint8Array): string | null => {
  try {
    const json = JSON.parse(decoder.decode(payload)) as unknown
    const dataschema = typeof json === "object" && json !== null ? (json as { dataschema?: unknown }).dataschema : undefined
    return typeof dataschema === "string" ? dataschema : null
  } catch {
    return null
  }
}

/** The statuses a filter's `replay` admits. */
export const statuses = (replay: ReplayStatus | ReadonlyArray<ReplayStatus>): ReadonlyArray<ReplayStatus> =>
  typeof replay === "string" ? [replay] : replay as ReadonlyArray<ReplayStatus>

/** Whether an entry matches a filter (drivers that filter in memory use it). */
export const matches = (entry: DeadLetterEntry, filter: Filter): boolean =>
  (filter.category === undefined || entry.category === filter.category) &&
  (filter.type === undefined || entry.type === filter.type) &&
  (filter.originTopic === undefined || entry.originTopic === filter.originTopic) &&
  (filter.replay === undefined || statuses(filter.replay).includes(entry.replay)) &&
  (filter.from === undefined || entry.lastFailedAt.epochMillis >= filter.from.epochMillis) &&
  (filter.to === undefined || entry.lastFailedAt.epochMillis < filter.to.epochMillis) &&
  (filter.fingerprint === undefined || fingerprintOf(entry.error, entry.originTopic) === filter.fingerprint)

/** The statuses {@link DeadLetterStore.groups} looks at when the filter names none: not replayed yet. */
export const unreplayed: ReadonlyArray<ReplayStatus> = ["pending", "replaying"]

/** What an alert hook is told. */
export type AlertEvent =
  | { readonly _tag: "DepthExceeded"; readonly depth: number; readonly threshold: number }
  | { readonly _tag: "DepthRecovered"; readonly depth: number; readonly threshold: number }

/** Settings of {@link alerts}. */
export interface AlertOptions {
  /** Alert when the depth (entries not replayed) reaches this. */
  readonly threshold: number
  /** Recover when the depth falls to this or below. Default `threshold - 1` (set lower to avoid flapping). */
  readonly recoverAt?: number
  /** Called once per crossing: once when the threshold is reached, once on recovery. */
  readonly onAlert: (event: AlertEvent) => Effect.Effect<void>
}

/**
 * Wraps a store so that every change that moves the depth checks it against the threshold. Edge-triggered:
 * one `DepthExceeded` when it is reached, one `DepthRecovered` when it falls back to `recoverAt`, never a
 * storm of repeats. A depth already over the threshold when the wrapper starts alerts at once.
 */
export const withAlerts = (store: Service, options: AlertOptions): Effect.Effect<Service, DeadLetterStoreError> =>
  Effect.gen(function*() {
    const recoverAt = options.recoverAt ?? options.threshold - 1
    const lock = yield* Effect.makeSemaphore(1)
    let alerting = false
    const check = lock.withPermits(1)(Effect.gen(function*() {
      const depth = yield* store.depth
      if (!alerting && depth >= options.threshold) {
        alerting = true
        yield* options.onAlert({ _tag: "DepthExceeded", depth, threshold: options.threshold })
      } else if (alerting && depth <= recoverAt) {
        alerting = false
        yield* options.onAlert({ _tag: "DepthRecovered", depth, threshold: options.threshold })
      }
    }))
    // The alert is a side channel: a failed depth read must not fail the write that triggered it.
    const checked = <A, E>(effect: Effect.Effect<A, E>) =>
      Effect.tap(effect, () =>
        check.pipe(Effect.catchAll((error) => Effect.logWarning("dead-letter depth check failed", error))))
    yield* check
    return {
      ...store,
      add: (entry) => checked(store.add(entry)),
      markReplayed: (id) => checked(store.markReplayed(id)),
      purge: (before) => checked(store.purge(before))
    }
  })

/** A layer that adds {@link withAlerts} to the `DeadLetterStore` it is provided with. */
export const alerts = (options: AlertOptions): Layer.Layer<DeadLetterStore, DeadLetterStoreError, DeadLetterStore> =>
  Layer.effect(DeadLetterStore, Effect.flatMap(DeadLetterStore, (store) => withAlerts(store, options)))
