/**
 * The outbox store port: the protocol a driver supplies so that the shared `Outbox.append` and `Relay` run
 * over it. Drivers: `OutboxStore/Sql.ts` (PGlite and PostgreSQL) and `OutboxStore/Memory.ts` (in-process,
 * Effect `Clock` time, for tests and the simulator).
 *
 * A row is `pending` until a relay marks it `published` or `dead`. The protocol every driver keeps:
 *
 * - **Append** writes rows in the caller's current transaction (the driver's notion of one) and fails with
 *   `OutsideTransaction` outside one, writing nothing.
 * - **Claim** leases up to `limit` rows to one relay: only the oldest pending row of a key is claimable (key
 *   `""` is unordered), only rows whose `availableAt` has passed, and never a row under another relay's
 *   unexpired lease. Answered in id order. A partitioned store (`partitioned: true`) leases partitions of
 *   keys instead: its claim answers, in id order, the pending rows of the partitions the relay holds, several
 *   of a key possibly, none of a key whose row waits for a retry; the relay publishes a key's rows in order.
 * - **Settle** (`markPublished`, `reschedule`, `markDead`) touches only rows the relay still holds (the row's
 *   lease, or its partition's, is the relay's): a relay
 *   whose lease expired and was taken over cannot mark what the new holder is publishing. A published row
 *   is deleted at once unless the relay keeps it for a retention period.
 * - **Wake-up**: an append that commits wakes a relay waiting in `Wakeup.wait`, well before its poll interval.
 */
import { Failure } from "@bulwark/core"
import type { Transport } from "@bulwark/transport"
import { Context, Data, type Duration, type Effect, Schema, type Scope } from "effect"

/** `append` was called outside a transaction: nothing was written, since the write would not be atomic with the caller's. */
export class OutsideTransaction extends Schema.TaggedError<OutsideTransaction>()("OutsideTransaction", {
  topic: Schema.String,
  count: Schema.Number
}) {
  override get message(): string {
    return `Outbox.append(${this.topic}, ${this.count} message(s)) must run inside the store's transaction (sql.withTransaction, or MemoryOutboxStore.transaction)`
  }
}

/** The store could not be reached or failed a statement (the driver's error is the `cause`). Transient, category `dependency`. */
export class OutboxStoreError extends Data.TaggedError("OutboxStoreError")<{
  readonly operation: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }
  override get message(): string {
    return `outbox store ${this.operation} failed: ${String(this.cause)}`
  }
}

/**
 * Relays of both modes are running on one outbox table: this relay leases rows (the default) while relays
 * with `partitioned: true` hold partition leases on the same table. The two modes do not see each other's
 * leases, so the row-leasing relay claims nothing until no partition is leased any more; it is the cause of
 * the claim's {@link OutboxStoreError} (transient: the relay waits, degraded, and goes on once the
 * partitioned relays have stopped and their leases have run out). All relays of a table must use one mode.
 */
export class ModeConflict extends Data.TaggedError("ModeConflict")<{
  readonly table: string
  /** Partitions whose lease is held now. */
  readonly leasedPartitions: number
}> {
  override get message(): string {
    return `relays with partitioned: true hold ${this.leasedPartitions} partition lease(s) on the outbox table ${this.table}, ` +
      "and this relay leases rows: all relays of a table must use the same partitioned setting. This relay claims nothing " +
      "until the partitioned relays have stopped and their leases have run out"
  }
}

/** A row that failed for good, as `deadLetters` reads it. */
export interface DeadRow {
  readonly id: number
  readonly topic: string
  readonly messageId: string
  readonly key: string
  readonly attempts: number
  readonly error: Failure.FailureRecord
  /** Whether the copy on `Delivery.deadLetterTopic(topic)` was published. */
  readonly deadLetterPublished: boolean
}

/** Which dead rows `requeueDead` puts back: by id, else all (of one topic when given). */
export interface RequeueSelection {
  readonly ids?: ReadonlyArray<number>
  readonly topic?: string
}

/** A row leased to a relay by `claim`. */
export interface ClaimedRow {
  readonly id: number
  readonly topic: string
  readonly message: Transport.OutgoingMessage
  /** Publish attempts before this one. */
  readonly attempts: number
}

/** What a relay asks of `claim`. */
export interface ClaimRequest {
  /** The relay's name: it holds the lease. */
  readonly relayId: string
  /** At most this many rows. */
  readonly limit: number
  /** How long the lease holds, in milliseconds. */
  readonly leaseMillis: number
}

/** A failed attempt that will be retried after `delayMillis`. */
export interface Reschedule {
  readonly attempts: number
  readonly error: Failure.FailureRecord
  readonly delayMillis: number
}

/** A row that failed for good. */
export interface Dead {
  readonly attempts: number
  readonly error: Failure.FailureRecord
  /** Whether the copy on the dead-letter topic was published. */
  readonly deadLetterPublished: boolean
}

/**
 * How a relay waits for work, from `OutboxStore.wakeup`. The relay calls `found` or `idle` after each
 * claim, then `wait` when there is nothing to do; the driver decides how appends reach it.
 */
export interface Wakeup {
  /** The last claim found rows. */
  readonly found: Effect.Effect<void>
  /**
   * The last claim found nothing. Answers `true` when the relay should claim once more before waiting (e.g.
   * it has just asked to be woken, and rows committed before that would send no signal).
   */
  readonly idle: Effect.Effect<boolean>
  /** Waits until an append signals, or `timeout` passes. Signals that arrived since the last wait count. */
  readonly wait: (timeout: Duration.Duration) => Effect.Effect<void>
}

/** The outbox store port. */
export class OutboxStore extends Context.Tag("@bulwark/outbox/OutboxStore")<OutboxStore, {
  /** A name for logs (the table for SQL). */
  readonly name: string
  /** Writes the messages in the caller's current transaction; outside one fails with {@link OutsideTransaction}. */
  readonly appendMessages: (
    topic: string,
    messages: ReadonlyArray<Transport.OutgoingMessage>
  ) => Effect.Effect<void, OutsideTransaction | OutboxStoreError>
  /** Rows not yet published (pending). */
  readonly backlog: Effect.Effect<number, OutboxStoreError>
  /** Age of the oldest pending row; zero when there is none. */
  readonly lag: Effect.Effect<Duration.Duration, OutboxStoreError>
  /** Waits until every row committed before the call is published or dead. */
  readonly drained: Effect.Effect<void, OutboxStoreError>
  /** The dead rows, oldest first (default limit 100), of one topic when given. */
  readonly deadLetters: (limit?: number, topic?: string) => Effect.Effect<ReadonlyArray<DeadRow>, OutboxStoreError>
  /**
   * Puts dead rows back to pending with a fresh attempt count, available now, and wakes the relays: the
   * rows `ids` names, else every dead row (of `topic` when given). Answers how many were requeued. A row
   * whose copy went to the dead-letter topic is published again: consumers dedupe on the message id.
   */
  readonly requeueDead: (selection?: RequeueSelection) => Effect.Effect<number, OutboxStoreError>
  /** Leases a batch to a relay (see the module comment for which rows); answers them in id order. */
  readonly claim: (request: ClaimRequest) => Effect.Effect<ReadonlyArray<ClaimedRow>, OutboxStoreError>
  /**
   * Settles as published the rows among `ids` that `relayId` still holds; answers how many. They are deleted,
   * or kept as `published` (for `cleanup` to delete after a retention period) when `keep` is true.
   */
  readonly markPublished: (
    relayId: string,
    ids: ReadonlyArray<number>,
    keep?: boolean
  ) => Effect.Effect<number, OutboxStoreError>
  /** Records a failed attempt of a row `relayId` holds and releases it until the delay passes; answers whether it held it. */
  readonly reschedule: (relayId: string, id: number, retry: Reschedule) => Effect.Effect<boolean, OutboxStoreError>
  /** Marks dead a row `relayId` holds; answers whether it held it. */
  readonly markDead: (relayId: string, id: number, dead: Dead) => Effect.Effect<boolean, OutboxStoreError>
  /**
   * Extends the lease of the pending rows among `ids` that `relayId` still holds to `leaseMillis` from now
   * (the relay's heartbeat); answers the ids it renewed.
   */
  readonly renew: (
    relayId: string,
    ids: ReadonlyArray<number>,
    leaseMillis: number
  ) => Effect.Effect<ReadonlyArray<number>, OutboxStoreError>
  /** Deletes published rows older than `retentionMillis` (and the driver's own stale bookkeeping); answers how many rows. */
  readonly cleanup: (retentionMillis: number) => Effect.Effect<number, OutboxStoreError>
  /** The wake-up mechanism of one relay, for the scope's lifetime. */
  readonly wakeup: (relayId: string, pollInterval: Duration.Duration) => Effect.Effect<Wakeup, never, Scope.Scope>
  /**
   * Hands back what a relay that has stopped still holds (its claimed rows, or its partitions and
   * registration) and wakes the other relays, so they go on at once instead of after the lease. Called by a
   * stopping relay once its rounds have ended. Optional: without it, a stopped relay's leases run out.
   */
  readonly release?: (relayId: string) => Effect.Effect<void, OutboxStoreError>
}>() {}

/** The service an `OutboxStore` driver implements. */
export interface Service extends Context.Tag.Service<OutboxStore> {}
