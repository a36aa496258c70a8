/** What the chaos driver hands each of its processes (as one JSON argument), and the names they share. */
import { Schema } from "effect"

/** Settings of one chaos process. */
export interface ChildConfig {
  readonly pgUrl: string
  readonly natsUrl: string
  /** The NATS stream prefix. */
  readonly prefix: string
  /** Relays: this relay's id. */
  readonly relayId?: string
  /** Relays: lease partitions of keys rather than rows. */
  readonly partitioned?: boolean
  /** Producer: events to append, keys they are spread over, events per transaction, events per second. */
  readonly events?: number
  readonly keys?: number
  readonly batch?: number
  readonly rate?: number
}

/** The topic the producer appends to and the consumer reads. */
export const topic = "chaos"
/** The outbox table. */
export const outboxTable = "chaos_outbox"
/** The inbox table of the consumer. */
export const inboxTable = "chaos_inbox"
/** The consumer's effect: one row per application, deliberately without a unique constraint so a double application shows. */
export const effectsTable = "chaos_effects"
/** The producer's own state change: one row per committed batch, which makes a retried batch append nothing. */
export const batchesTable = "chaos_batches"
/**
 * The producer's ledger of committed events, written in the append's transaction: what was committed, counted
 * independently of the outbox table (whose published rows the relay deletes).
 */
export const committedTable = "chaos_committed"

/** The event's data: its key and its position in that key's sequence. */
export const Event = Schema.Struct({ n: Schema.Number, key: Schema.String, seq: Schema.Number })

/** Reads the configuration a chaos process was started with. */
export const childConfig = (): ChildConfig => JSON.parse(process.argv[2] ?? "{}") as ChildConfig
