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

/**
 * The row as the message the transport publishes. Its payload is copied unless `owned`: the driver handed
 * over bytes no one else holds (node-postgres decodes each bytea value into a buffer of its own), which are
 * then only re-viewed as a plain `Uint8Array`. The copy allocates a backing store per row, the largest share
 * of the decoding's cost; a driver that may hand out views of a buffer it reuses must not pass `owned`.
 */
export const toClaimed = (row: Row, owned = false): ClaimedRow => ({
  id: Number(row.id),
  topic: row.topic,
  attempts: row.attempts,
  message: {
    id: row.message_id,
    key: row.key,
    payload: owned
      ? new Uint8Array(row.payload.buffer, row.payload.byteOffset, row.payload.byteLength)
      : new Uint8Array(row.payload),
    headers: JSON.parse(row.headers) as Record<string, string>
  } satisfies Transport.OutgoingMessage
})
