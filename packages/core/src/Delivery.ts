/**
 * What a transport hands a consumer: one message and the three ways to settle it.
 *
 * Every Bulwark transport is **at least once**: a message is removed only by `ack` or `deadLetter`.
 * A `nack`, a consumer that dies, or a delivery left unsettled past the transport's visibility timeout
 * brings the message back, so consumers must be idempotent (see `@bulwark/idempotency`).
 */
import { Data, Duration, Effect, Schema } from "effect"
import { Category, FailureRecord } from "./Failure.js"

/** A message as it travels on a transport: opaque bytes plus routing metadata. */
export interface Message {
  /** The envelope id; transports that deduplicate use it. */
  readonly id: string
  readonly topic: string
  /** The ordering key (the envelope's subject); `""` when none. */
  readonly key: string
  readonly payload: Uint8Array
  readonly headers: Readonly<Record<string, string>>
}

/** Why a message is being dead-lettered: its triage category and the last error, encoded for storage. */
export class DeadLetterReason extends Schema.Class<DeadLetterReason>("@bulwark/core/DeadLetterReason")({
  category: Category,
  error: FailureRecord,
  attempts: Schema.Int
}) {}

/** A settle operation failed (the broker was unreachable, the receipt expired). The message will come back. */
export class DeliveryError extends Data.TaggedError("DeliveryError")<{
  readonly operation: "ack" | "nack" | "deadLetter"
  readonly messageId: string
  readonly cause: unknown
}> {
  override get message(): string {
    return `${this.operation} of message ${this.messageId} failed: ${String(this.cause)}`
  }
}

/** One delivery of one message; settle it exactly once with `ack`, `nack` or `deadLetter`. */
export interface Delivery {
  readonly message: Message
  /** 1 for the first delivery, incremented by every redelivery. */
  readonly attempt: number
  /** Done: the message is removed and will not be delivered again. */
  readonly ack: Effect.Effect<void, DeliveryError>
  /** Not now: the message is delivered again, after `delay` when the transport supports delays. */
  readonly nack: (options?: { readonly delay?: Duration.DurationInput }) => Effect.Effect<void, DeliveryError>
  /** Never: the message moves to the topic's dead-letter destination with the reason attached. */
  readonly deadLetter: (reason: DeadLetterReason) => Effect.Effect<void, DeliveryError>
}

/** Header names a transport sets on a dead-lettered copy of a message. */
export const DeadLetterHeaders = {
  category: "bulwark-dlq-category",
  error: "bulwark-dlq-error",
  attempts: "bulwark-dlq-attempts",
  originTopic: "bulwark-origin-topic"
} as const

/** The dead-letter destination Bulwark uses for a topic unless a driver is told otherwise. */
export const deadLetterTopic = (topic: string): string => `${topic}.dlq`

const encodeReason = Schema.encodeSync(DeadLetterReason)

/** The headers a dead-lettered copy carries, so the reason survives any transport. */
export const deadLetterHeaders = (
  message: Message,
  reason: DeadLetterReason
): Record<string, string> => {
  const encoded = encodeReason(reason)
  return {
    ...message.headers,
    [DeadLetterHeaders.category]: reason.category,
    [DeadLetterHeaders.error]: JSON.stringify(encoded.error),
    [DeadLetterHeaders.attempts]: String(reason.attempts),
    [DeadLetterHeaders.originTopic]: message.topic
  }
}

const decodeRecord = Schema.decodeUnknownOption(Schema.parseJson(FailureRecord))

/** Reads the reason back from a dead-lettered copy's headers, when they are intact. */
export const readDeadLetterReason = (headers: Readonly<Record<string, string>>) => {
  const category = headers[DeadLetterHeaders.category]
  const error = headers[DeadLetterHeaders.error]
  if (category === undefined || error === undefined) return undefined
  const record = decodeRecord(error)
  if (record._tag === "None") return undefined
  const parsedCategory = Schema.decodeUnknownOption(Category)(category)
  if (parsedCategory._tag === "None") return undefined
  return new DeadLetterReason({
    category: parsedCategory.value,
    error: record.value,
    attempts: Number(headers[DeadLetterHeaders.attempts] ?? "0") | 0
  })
}
