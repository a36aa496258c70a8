/**
 * An outbox row as the relays read it, and its decoding into the message the transport publishes: one
 * decoding for the polling relay's claim and the change-data-capture relay's decoded inserts, so both
 * publish the same envelope with the same headers.
 */
import type { Transport } from "@bulwark/transport"
import type { ClaimedRow } from "../OutboxStore.js"

/** The columns of an outbox row a relay needs. */
export interface Row {
  readonly id: number | string
  readonly topic: string
  readonly message_id: string
  readonly key: string
  readonly payload: Uint8Array
  readonly headers: string
  readonly attempts: number
}

/** The row as the message the transport publishes. */
export const toClaimed = (row: Row): ClaimedRow => ({
  id: Number(row.id),
  topic: row.topic,
  attempts: row.attempts,
  message: {
    id: row.message_id,
    key: row.key,
    payload: new Uint8Array(row.payload),
    headers: JSON.parse(row.headers) as Record<string, string>
  } satisfies Transport.OutgoingMessage
})
