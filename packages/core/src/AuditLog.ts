/**
 * The audit log port: an append-only record of what happened to each event, written by the packages
 * themselves (webhook ingress, transports, the pipeline, the dead-letter queue, the webhook dispatcher, the
 * poller) so that "what happened to event X, when, and what did we do about it" has one answer.
 *
 * The service is optional: a package writes through {@link record}, which looks the service up in the
 * fiber's context and does nothing else when it is absent (no entry is even built). Drivers live in
 * `@bulwark/audit` (`AuditLog/Memory`, `AuditLog/Sql`); the tag lives here so that every package can write
 * without depending on them.
 *
 * An entry carries no payload unless the driver is told to keep the messages of a topic (for replay from
 * history). Its `detail` holds only small facts (a status, a signature result, a consumer group); a driver
 * passes every entry through its redaction hook before it is stored.
 */
import { Context, Data, Effect, Option, Schema } from "effect"
import * as Failure from "./Failure.js"

/** The stages of an event's life that the packages record. */
export const Stage = Schema.Literal(
  "received",
  "polled",
  "published",
  "delivered",
  "processed",
  "dead-lettered",
  "replayed",
  "sent"
)
/** The stages of an event's life that the packages record. */
export type Stage = typeof Stage.Type

/** One audit entry: one thing that happened to one event. */
export class Entry extends Schema.Class<Entry>("@bulwark/core/AuditLog/Entry")({
  /** The event (message, envelope) id. */
  eventId: Schema.String,
  stage: Stage,
  /** Epoch milliseconds (the writer's `Clock`). */
  at: Schema.Number,
  /** The package that wrote it: `webhook`, `transport`, `pipeline`, `dead-letter`, `dispatcher`, `poll`, … */
  component: Schema.String,
  /** The topic (or source, endpoint) the stage concerns. */
  topic: Schema.optional(Schema.String),
  /** How it ended: `accepted`, `rejected`, `acked`, `dead-lettered`, `delivered`, `failed`, … */
  outcome: Schema.optional(Schema.String),
  attempt: Schema.optional(Schema.Number),
  durationMs: Schema.optional(Schema.Number),
  /** The failure category when it failed. */
  category: Schema.optional(Failure.Category),
  /** The event that caused this one (its `causation-id` header), so a timeline can follow the chain. */
  causationId: Schema.optional(Schema.String),
  /** Small facts, redacted by the driver's hook before storage. */
  detail: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Union(Schema.String, Schema.Number, Schema.Boolean) })),
  /**
   * The message itself (`published` entries), for replay from history. Drivers drop it unless their
   * settings keep messages (of the topics the user allows).
   */
  message: Schema.optional(Schema.Struct({ key: Schema.String, payload: Schema.Uint8ArrayFromSelf, headers: Schema.Record({ key: Schema.String, value: Schema.String }) }))
}) {}

/** What a writer supplies; `at` defaults to the `Clock`. */
export type EntryInput = Omit<ConstructorParameters<typeof Entry>[0], "at"> & { readonly at?: number }

/** A query over the log. Entries come in time order. */
export interface Query {
  /** Only entries at or after this epoch millisecond. */
  readonly since?: number
  /** Only entries before this epoch millisecond. */
  readonly until?: number
  readonly stage?: Stage
  readonly topic?: string
  /** Resume after this position (see {@link Positioned.position}). */
  readonly after?: number
  /** At most this many. Default 1000. */
  readonly limit?: number
}

/** An entry with its position in the log (strictly increasing in write order, for resumable scans). */
export interface Positioned {
  readonly position: number
  readonly entry: Entry
}

/** The audit log could not be read or written (the driver's error is the `cause`). Transient `dependency`. */
export class AuditLogError extends Data.TaggedError("AuditLogError")<{
  readonly operation: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("transient", "dependency")
  }
  override get message(): string {
    return `audit log ${this.operation} failed: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** The audit log port. */
export class AuditLog extends Context.Tag("@bulwark/core/AuditLog")<AuditLog, {
  /**
   * Accepts entries. Never fails and never waits for storage: drivers buffer and write in batches, so the
   * path being audited pays for a buffer push. Entries the driver could not store are counted and logged.
   */
  readonly write: (entries: ReadonlyArray<Entry>) => Effect.Effect<void>
  /** Writes what is buffered now (tests, shutdown, `history show` right after a run). */
  readonly flush: Effect.Effect<void, AuditLogError>
  /** Every entry of one event, in time order. */
  readonly timeline: (eventId: string) => Effect.Effect<ReadonlyArray<Entry>, AuditLogError>
  /** Entries whose `causationId` is one of `eventIds` (the events they caused). */
  readonly caused: (eventIds: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Entry>, AuditLogError>
  /** One page of entries matching `query`, in position order. */
  readonly query: (query: Query) => Effect.Effect<ReadonlyArray<Positioned>, AuditLogError>
  /** Deletes entries older than `retentionMillis` (whole days where the driver partitions); answers how many. */
  readonly cleanup: (retentionMillis: number) => Effect.Effect<number, AuditLogError>
}>() {}

/** The service an audit log driver implements. */
export interface Service extends Context.Tag.Service<AuditLog> {}

/**
 * Records one entry when an {@link AuditLog} is in context; otherwise does nothing, and `entry` is never
 * called (an absent audit log costs a context lookup).
 */
export const record = (entry: () => EntryInput | ReadonlyArray<EntryInput>): Effect.Effect<void> =>
  Effect.flatMap(Effect.serviceOption(AuditLog), (log) => {
    if (Option.isNone(log)) return Effect.void
    return Effect.flatMap(Effect.clockWith((clock) => clock.currentTimeMillis), (now) => {
      const made = entry()
      const list = Array.isArray(made) ? made as ReadonlyArray<EntryInput> : [made as EntryInput]
      // Built by the packages from typed values: validating each entry again would cost every audited event.
      return log.value.write(list.map((input) => new Entry({ ...input, at: input.at ?? now }, { disableValidation: true })))
    })
  })

/** The `causation-id` header of a message's headers, for {@link Entry.causationId}. */
export const causationOf = (headers: Readonly<Record<string, string>>): { readonly causationId?: string } => {
  const value = headers["causation-id"]
  return value === undefined ? {} : { causationId: value }
}

/**
 * The whole story of one event: its own entries and, following `causationId`, those of the events it
 * caused (and theirs, `depth` levels down), in time order.
 */
export const story = (eventId: string, depth = 4): Effect.Effect<ReadonlyArray<Entry>, AuditLogError, AuditLog> =>
  Effect.gen(function*() {
    const log = yield* AuditLog
    const all: Array<Entry> = [...(yield* log.timeline(eventId))]
    const seen = new Set([eventId])
    let frontier = [eventId]
    for (let level = 0; level < depth && frontier.length > 0; level++) {
      const children = yield* log.caused(frontier)
      frontier = []
      for (const child of children) {
        if (seen.has(child.eventId)) continue
        seen.add(child.eventId)
        frontier.push(child.eventId)
        all.push(...(yield* log.timeline(child.eventId)))
      }
    }
    return all.sort((a, b) => a.at - b.at)
  })

