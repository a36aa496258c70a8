/**
 * The durable state of the {@link Dispatcher}: endpoints, messages, one delivery per (message, endpoint) with
 * its due time, and every attempt. A delivery is claimed under a lease with a fresh fencing token; only the
 * holder of the current token can record its attempt and settle it, so a worker that lost its claim (it
 * stalled, crashed, or its lease ran out) changes nothing. Drivers: memory (`@bulwark/webhook/DispatchStore/Memory`)
 * and SQL (`@bulwark/webhook/DispatchStore/Sql`). Times are epoch milliseconds from the caller's `Clock`.
 */
import { Failure } from "@bulwark/core"
import { Context, type Effect, type Option, Schema } from "effect"
import { Attempt } from "./Sender.js"

/** A registered destination. */
export interface EndpointRecord {
  readonly id: string
  readonly url: string
  /** `whsec_…`/`whsk_…` secrets it verifies with (several during a rotation). */
  readonly secrets: ReadonlyArray<string>
  /** Disabled endpoints get no attempts; their deliveries fail as `disabled`. */
  readonly disabled: boolean
  readonly disabledReason?: string | undefined
  /** When the current run of failures began (cleared by a success); drives automatic disabling. */
  readonly failingSince?: number | undefined
}

/** A message to deliver, stored once for all its endpoints. */
export interface StoredMessage {
  readonly id: string
  readonly body: Uint8Array
  readonly contentType?: string
  readonly headers?: Readonly<Record<string, string>>
  readonly createdAt: number
}

/** Where a delivery stands. */
export type DeliveryState = "pending" | "delivered" | "failed"

/** Why a delivery failed for good. */
export type FailReason = "exhausted" | "gone" | "disabled" | "refused" | "unsigned"

/** One (message, endpoint) delivery. */
export interface DeliveryRecord {
  readonly messageId: string
  readonly endpointId: string
  readonly state: DeliveryState
  /** Attempts made so far. */
  readonly attempts: number
  /** When the next attempt is due (pending deliveries). */
  readonly dueAt: number
  readonly createdAt: number
  readonly updatedAt: number
  readonly failReason?: FailReason | undefined
}

/** A claimed delivery: what the worker needs to attempt it, and the token that lets it settle. */
export interface Claim {
  readonly delivery: DeliveryRecord
  readonly message: StoredMessage
  readonly endpoint: EndpointRecord
  /** The fencing token of this claim; a later claim of the same delivery gets another. */
  readonly token: string
}

/** How a claimed delivery is settled. */
export type Settlement =
  | { readonly _tag: "Retry"; readonly dueAt: number }
  | { readonly _tag: "Delivered" }
  | { readonly _tag: "Failed"; readonly reason: FailReason }

/** Which deliveries a query or a requeue covers; every given field must match. */
export interface Filter {
  readonly messageId?: string
  readonly endpointId?: string
  readonly state?: DeliveryState
  /** Created at or after this time. */
  readonly since?: number
  /** At most this many, oldest first. Default 100 for queries, no limit for requeues. */
  readonly limit?: number
}

/** The store failed (connection, statement); transient: the operation may be retried. */
export class DispatchStoreError extends Schema.TaggedError<DispatchStoreError>()("DispatchStoreError", {
  operation: Schema.String,
  cause: Schema.Defect
}) {
  override get message(): string {
    return `dispatch store ${this.operation} failed: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("transient", "dependency")
  }
}

/** The store port. */
export interface Service {
  /** Adds or updates an endpoint's URL and secrets; its disabled state and failure run are kept. */
  readonly putEndpoint: (endpoint: { readonly id: string; readonly url: string; readonly secrets: ReadonlyArray<string> }) => Effect.Effect<void, DispatchStoreError>
  readonly endpoint: (id: string) => Effect.Effect<Option.Option<EndpointRecord>, DispatchStoreError>
  readonly endpoints: Effect.Effect<ReadonlyArray<EndpointRecord>, DispatchStoreError>
  /** Changes an endpoint's disabled state or failure run (`null` clears `failingSince`). */
  readonly updateEndpoint: (
    id: string,
    patch: { readonly disabled?: boolean; readonly disabledReason?: string | null; readonly failingSince?: number | null }
  ) => Effect.Effect<void, DispatchStoreError>
  /**
   * Stores `message` and one pending delivery per endpoint, due at `now`; answers how many deliveries were
   * new. Idempotent: a (message, endpoint) pair already stored is left as it is. Runs on the caller's
   * transaction when there is one (SQL), so a business write and its webhooks commit together.
   */
  readonly enqueue: (message: StoredMessage, endpointIds: ReadonlyArray<string>) => Effect.Effect<number, DispatchStoreError>
  /** Claims up to `limit` pending deliveries due by `now` whose lease (if any) ran out, each with a new token. */
  readonly claim: (request: {
    readonly workerId: string
    readonly now: number
    readonly limit: number
    readonly leaseMillis: number
  }) => Effect.Effect<ReadonlyArray<Claim>, DispatchStoreError>
  /**
   * Records `attempt` (when given) and settles the delivery, only if `token` is still its claim's token and
   * the delivery is pending; answers whether it did. A false answer means another worker holds it now.
   */
  readonly settle: (
    token: string,
    delivery: { readonly messageId: string; readonly endpointId: string },
    attempt: Attempt | undefined,
    settlement: Settlement,
    now: number
  ) => Effect.Effect<boolean, DispatchStoreError>
  /** Every recorded attempt of a message, oldest first (across endpoints). */
  readonly attempts: (messageId: string) => Effect.Effect<ReadonlyArray<Attempt>, DispatchStoreError>
  readonly deliveries: (filter: Filter) => Effect.Effect<ReadonlyArray<DeliveryRecord>, DispatchStoreError>
  /**
   * Makes matching deliveries that are not pending (failed, or delivered when `includeDelivered`) pending
   * again, due at `now`, with their attempt count kept; answers how many. Resend and recover use it.
   */
  readonly requeue: (
    filter: Filter & { readonly includeDelivered?: boolean },
    now: number
  ) => Effect.Effect<number, DispatchStoreError>
  /** The earliest due time of a pending delivery, if any (a worker sleeps until then at most). */
  readonly nextDue: Effect.Effect<Option.Option<number>, DispatchStoreError>
}

/** The store port. */
export class DispatchStore extends Context.Tag("@bulwark/webhook/DispatchStore")<DispatchStore, Service>() {}

/** Encodes an attempt for storage. */
export const encodeAttempt = Schema.encodeSync(Schema.parseJson(Attempt))
/** Decodes a stored attempt. */
export const decodeAttempt = Schema.decodeUnknownSync(Schema.parseJson(Attempt))
