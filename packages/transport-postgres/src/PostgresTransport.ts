/**
 * The Postgres queue-table transport: `Transport.Publisher` and `Transport.Subscriber` over one table,
 * on the embedded PGlite or a real PostgreSQL server (any `@bulwark/sql` database layer).
 *
 * - A message is a row per consumer group (`grp`); a topic with no group yet gets one unassigned row that
 *   the first group to claim it adopts, so nothing published before the first subscriber is lost.
 * - Claiming is one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)` that pushes `visible_at` by
 *   the visibility timeout and increments `attempt`: competing consumers in any number of processes never
 *   take the same row, and a consumer that dies gives its rows back when `visible_at` passes.
 * - `ack` deletes the row, `nack({ delay })` sets `visible_at = now() + delay`, `deadLetter` moves the row
 *   to `${topic}.dlq` with `Delivery.deadLetterHeaders`, all guarded by the attempt (the receipt).
 * - `publish` sends `NOTIFY <table>, '<topic>'` in its transaction; subscriptions wake on it and poll
 *   every `pollInterval` as a fallback (delayed nacks and expired visibility are found by polling).
 * - Ordered per key by default: only the oldest row of a key is claimable, so a key's next message waits
 *   until the previous one is acked or dead-lettered; other keys do not wait.
 */
import { type Database, Migrations } from "@bulwark/sql"
import type { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Config, type ConfigError, Duration, Effect, Layer, type Scope } from "effect"
import * as internal from "./internal/queue.js"

/** Settings of the Postgres transport; every field has a default. */
export interface Options {
  /** The queue table; `<table>_groups` holds the consumer groups. Default `bulwark_queue`. */
  readonly table?: string
  /** How long a delivery may stay unsettled before it is delivered again. Default 30 s. */
  readonly visibilityTimeout?: Duration.DurationInput
  /** Longest wait between two claims when no notification arrives. Default 1 s. */
  readonly pollInterval?: Duration.DurationInput
  /**
   * Rows a subscription claims at once. Claimed rows are invisible to others until settled or until the
   * visibility timeout, including ones the stream has not emitted when it stops. Default 1.
   */
  readonly batchSize?: number
  /** Only a key's oldest unsettled message is deliverable. Default true. */
  readonly orderedPerKey?: boolean
}

/** The table name is not a plain lower-case SQL identifier. */
export const InvalidTableName = Migrations.InvalidTableName
/** The table name is not a plain lower-case SQL identifier. */
export type InvalidTableName = Migrations.InvalidTableName

/** The default queue table. */
export const defaultTable = "bulwark_queue"

/** The transport: both ports' operations and the features it declares. */
export interface PostgresTransport extends Transport.Driver {}

const settings = (options: Options): internal.Settings => ({
  table: options.table ?? defaultTable,
  visibilityTimeout: Duration.decode(options.visibilityTimeout ?? "30 seconds"),
  pollInterval: Duration.decode(options.pollInterval ?? "1 second"),
  batchSize: Math.max(1, Math.floor(options.batchSize ?? 1)),
  orderedPerKey: options.orderedPerKey ?? true
})

/** Creates the tables (migrations) and the transport; its LISTEN connection lives in the scope. */
export const make = (
  options: Options = {}
): Effect.Effect<PostgresTransport, SqlError | InvalidTableName, SqlClient.SqlClient | Database.Database | Scope.Scope> =>
  internal.make(settings(options))

/** Provides `Transport.Publisher` and `Transport.Subscriber` over the database in context. */
export const layer = (
  options: Options = {}
): Layer.Layer<Transport.Publisher | Transport.Subscriber, SqlError | InvalidTableName, SqlClient.SqlClient | Database.Database> =>
  Driver.layer(make(options), { system: "postgresql" })

/**
 * The transport configured by `BULWARK_QUEUE_TABLE`, `BULWARK_QUEUE_VISIBILITY_TIMEOUT` and
 * `BULWARK_QUEUE_POLL_INTERVAL` (durations like `30 seconds`); `options` sets the rest (batch size, ordering).
 * A function, like every driver's `layerConfig`.
 */
export const layerConfig = (
  options: Omit<Options, "table" | "visibilityTimeout" | "pollInterval"> = {}
): Layer.Layer<
  Transport.Publisher | Transport.Subscriber,
  SqlError | InvalidTableName | ConfigError.ConfigError,
  SqlClient.SqlClient | Database.Database
> =>
  Layer.unwrapEffect(Effect.map(
    Config.all({
      table: Config.withDefault(Config.string("BULWARK_QUEUE_TABLE"), defaultTable),
      visibilityTimeout: Config.withDefault(Config.duration("BULWARK_QUEUE_VISIBILITY_TIMEOUT"), Duration.seconds(30)),
      pollInterval: Config.withDefault(Config.duration("BULWARK_QUEUE_POLL_INTERVAL"), Duration.seconds(1))
    }),
    (configured) => layer({ ...options, ...configured })
  ))

/** Drops the transport's tables and forgets their migrations (for tests and teardown). */
export const drop = (table: string = defaultTable): Effect.Effect<void, SqlError | InvalidTableName, SqlClient.SqlClient> =>
  internal.drop(table)
