/**
 * The transactional outbox: events are written as rows in the same database transaction as the state
 * change that caused them, so both commit or neither does. A {@link Relay} publishes the rows afterwards.
 *
 * Rows hold the topic, the message id, the key (the envelope's subject, which orders delivery), the
 * CloudEvents payload, the headers (W3C trace context included), the creation time, the publish attempts
 * and the state: `pending` → `published` (deleted after the retention period) or `dead` (kept, with the
 * last error as a `Failure.FailureRecord`).
 */
import { Envelope, Failure } from "@bulwark/core"
import { Database, Migrations } from "@bulwark/sql"
import type { Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Context, Duration, Effect, Layer, Metric, Option, Schema, Stream } from "effect"
import { identity } from "effect/Function"
import * as tables from "./internal/tables.js"

/** `append` was called outside a transaction: nothing was written, since the write would not be atomic with the caller's. */
export class OutsideTransaction extends Schema.TaggedError<OutsideTransaction>()("OutsideTransaction", {
  topic: Schema.String,
  count: Schema.Number
}) {
  override get message(): string {
    return `Outbox.append(${this.topic}, ${this.count} message(s)) must run inside sql.withTransaction`
  }
}

/** The table name is not a plain lower-case SQL identifier. */
export const InvalidTableName = Migrations.InvalidTableName
/** The table name is not a plain lower-case SQL identifier. */
export type InvalidTableName = Migrations.InvalidTableName

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

/** Settings of the outbox tables. */
export interface Options {
  /** The outbox table. Default `bulwark_outbox`. */
  readonly table?: string
  /**
   * How `append` wakes relays. Default `true`: it sends `NOTIFY` in the caller's transaction only while some
   * relay is asleep, waiting for one; a busy relay claims again by itself, so under load appends send none.
   * `"always"`: every appending transaction notifies. `false`: none does; relays poll (`Relay` `pollInterval`).
   * Postgres serialises the commits of notifying transactions (a database-wide lock), so notifications
   * cap the commit rate of busy appenders; that is what the default avoids.
   */
  readonly notify?: boolean | "always"
}

/** The default outbox table. */
export const defaultTable = "bulwark_outbox"

/** The outbox over one table. */
export interface OutboxService {
  readonly table: string
  /** The NOTIFY channel `append` signals on commit (the relay listens on it). */
  readonly channel: string
  /** The NOTIFY channel the relay signals after it settles rows (`drained` listens on it). */
  readonly settledChannel: string
  /** How `append` wakes relays (see {@link Options.notify}). */
  readonly notify: boolean | "always"
  /** The table where sleeping relays register, so that appends wake them. */
  readonly sleepersTable: string
  /** Writes the messages in the caller's current transaction. */
  readonly appendMessages: (
    topic: string,
    messages: ReadonlyArray<Transport.OutgoingMessage>
  ) => Effect.Effect<void, OutsideTransaction | SqlError>
  /** Rows not yet published (pending). */
  readonly backlog: Effect.Effect<number, SqlError>
  /** Age of the oldest pending row; zero when there is none. */
  readonly lag: Effect.Effect<Duration.Duration, SqlError>
  /** Waits until every row committed before the call is published or dead. */
  readonly drained: Effect.Effect<void, SqlError>
  /** The dead rows, oldest first. */
  readonly deadLetters: (limit?: number) => Effect.Effect<ReadonlyArray<DeadRow>, SqlError>
}

/** The outbox service. */
export class Outbox extends Context.Tag("@bulwark/outbox/Outbox")<Outbox, OutboxService>() {}

/** Backlog gauge (pending rows), updated by the relay. */
export const backlogGauge = Metric.gauge("bulwark_outbox_backlog", { description: "outbox rows not yet published" })
/** Lag gauge (age of the oldest pending row in ms), updated by the relay. */
export const lagGauge = Metric.gauge("bulwark_outbox_lag_ms", { description: "age of the oldest unpublished outbox row" })

const toBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
const decodeRecord = Schema.decodeUnknownSync(Schema.parseJson(Failure.FailureRecord))

/** Creates the outbox table (migrations) and the service. */
export const make = (
  options: Options = {}
): Effect.Effect<OutboxService, SqlError | InvalidTableName, SqlClient.SqlClient | Database.Database> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const db = yield* Database.Database
    const table = yield* Migrations.tableName(options.table ?? defaultTable)
    yield* Migrations.run(`outbox:${table}`, tables.outboxMigrations(table))
    const channel = table
    const notify = options.notify ?? true
    const sleepersTable = tables.sleepersTable(table)
    const settledChannel = `${table}_settled`
    const wakePayload = "appended"

    // The append runs once per business transaction, so it skips the statement builder: the text for each
    // row count is built once and run on the caller's transaction connection directly. The insert and the
    // NOTIFY are one statement (one round trip); the notification leaves at the caller's commit. Its payload
    // is the same for every append, so however many appends and topics a transaction holds, Postgres folds
    // them into one notification at commit: relays only need to know that rows arrived. By default it is
    // sent only while a relay sleeps: notifying commits are serialised, and a busy relay needs no wake-up.
    const insertTexts = new Map<number, string>()
    const insertText = (rows: number) => {
      let text = insertTexts.get(rows)
      if (text === undefined) {
        const first = notify ? 3 : 1
        const values = Array.from({ length: rows }, (_, r) => {
          const p = first + r * 5
          return `($${p}, $${p + 1}, $${p + 2}, $${p + 3}, $${p + 4})`
        }).join(", ")
        const insert = `INSERT INTO "${table}" (topic, message_id, key, payload, headers) VALUES ${values}`
        const wakeAll = `WITH inserted AS (${insert} RETURNING id) SELECT pg_notify($1, $2)`
        text = notify === "always"
          ? wakeAll
          : notify
          ? `${wakeAll} WHERE EXISTS (SELECT 1 FROM "${sleepersTable}")`
          : insert
        insertTexts.set(rows, text)
      }
      return text
    }
    const maxRowsPerStatement = 1000

    const appendMessages = (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) =>
      Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (tx): Effect.Effect<void, OutsideTransaction | SqlError> => {
        if (Option.isNone(tx)) return Effect.fail(new OutsideTransaction({ topic, count: messages.length }))
        if (messages.length === 0) return Effect.void
        const connection = tx.value[0]
        const statements: Array<Effect.Effect<unknown, SqlError>> = []
        for (let start = 0; start < messages.length; start += maxRowsPerStatement) {
          const end = Math.min(messages.length, start + maxRowsPerStatement)
          const params: Array<unknown> = notify ? [channel, wakePayload] : []
          for (let i = start; i < end; i++) {
            const m = messages[i]!
            params.push(topic, m.id, m.key, toBuffer(m.payload), JSON.stringify(m.headers))
          }
          statements.push(connection.executeRaw(insertText(end - start), params))
        }
        return statements.length === 1 ? Effect.asVoid(statements[0]!) : Effect.forEach(statements, identity, { discard: true })
      })

    const backlog = Effect.map(
      sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)} WHERE state = 'pending'`,
      (rows) => rows[0]?.n ?? 0
    )

    const lag = Effect.map(
      sql<{ ms: number | null }>`SELECT (extract(epoch FROM now() - min(created_at)) * 1000)::float8 AS ms
        FROM ${sql(table)} WHERE state = 'pending'`,
      (rows) => Duration.millis(Math.max(0, rows[0]?.ms ?? 0))
    )

    const pendingUpTo = (maxId: number) =>
      Effect.map(
        sql`SELECT 1 FROM ${sql(table)} WHERE state = 'pending' AND id <= ${maxId} LIMIT 1`,
        (rows) => rows.length > 0
      )

    // Listens before reading the high-water mark, so a settlement between the two is not missed; polls as a fallback.
    const drained = Effect.scoped(Effect.gen(function*() {
      const settled = yield* Stream.toPull(db.listen(settledChannel))
      const [high] = yield* sql<{ id: number | null }>`SELECT max(id)::int8 AS id FROM ${sql(table)}`
      const maxId = high?.id ?? 0
      while (yield* pendingUpTo(maxId)) {
        yield* settled.pipe(Effect.timeout("100 millis"), Effect.ignore)
      }
    }))

    const deadLetters = (limit = 100) =>
      Effect.map(
        sql<{
          id: number
          topic: string
          message_id: string
          key: string
          attempts: number
          last_error: string | null
          dead_letter_published: boolean | null
        }>`SELECT id, topic, message_id, key, attempts, last_error, dead_letter_published
          FROM ${sql(table)} WHERE state = 'dead' ORDER BY id LIMIT ${limit}`,
        (rows) =>
          rows.map((row): DeadRow => ({
            id: Number(row.id),
            topic: row.topic,
            messageId: row.message_id,
            key: row.key,
            attempts: row.attempts,
            error: row.last_error === null
              ? new Failure.FailureRecord({ tag: "Unknown", message: "no error recorded", classification: "permanent", category: "unknown" })
              : decodeRecord(row.last_error),
            deadLetterPublished: row.dead_letter_published === true
          }))
      )

    return { table, channel, settledChannel, notify, sleepersTable, appendMessages, backlog, lag, drained, deadLetters }
  })

/**
 * Drops an outbox's tables and forgets their migrations, for tests and throw-away runs; a later `make` over
 * the same name starts afresh.
 */
export const drop = (table: string = defaultTable): Effect.Effect<void, SqlError | InvalidTableName, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const checked = yield* Migrations.tableName(table)
    yield* sql`DROP TABLE IF EXISTS ${sql(checked)}`
    yield* sql`DROP TABLE IF EXISTS ${sql(tables.sleepersTable(checked))}`
    yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`outbox:${checked}`}`
  })

/** Provides the {@link Outbox} over the database in context, creating its table. */
export const layer = (
  options: Options = {}
): Layer.Layer<Outbox, SqlError | InvalidTableName, SqlClient.SqlClient | Database.Database> =>
  Layer.effect(Outbox, make(options))

/** Appends raw messages to the outbox in the caller's current transaction. */
export const appendMessages = (
  topic: string,
  messages: ReadonlyArray<Transport.OutgoingMessage>
): Effect.Effect<void, OutsideTransaction | SqlError, Outbox> =>
  Effect.flatMap(Outbox, (outbox) => outbox.appendMessages(topic, messages))

/**
 * Appends envelopes (encoded as CloudEvents, keyed by subject, with their headers) in the caller's current
 * transaction; outside one it fails with {@link OutsideTransaction} and writes nothing.
 */
export const append = <A, I, R>(dataSchema: Schema.Schema<A, I, R>) => {
  const encode = Envelope.encode(dataSchema)
  return (
    topic: string,
    envelopes: ReadonlyArray<Envelope.Envelope<A>>
  ): Effect.Effect<void, OutsideTransaction | SqlError | Envelope.EnvelopeEncodeError, R | Outbox> =>
    Effect.flatMap(
      Effect.forEach(envelopes, (envelope) =>
        Effect.map(encode(envelope), (payload): Transport.OutgoingMessage => ({
          id: envelope.id,
          key: envelope.subject,
          payload,
          headers: envelope.headers
        }))),
      (messages) => appendMessages(topic, messages)
    )
}

/** Rows not yet published. */
export const backlog: Effect.Effect<number, SqlError, Outbox> = Effect.flatMap(Outbox, (o) => o.backlog)

/** Age of the oldest unpublished row (zero when none). */
export const lag: Effect.Effect<Duration.Duration, SqlError, Outbox> = Effect.flatMap(Outbox, (o) => o.lag)

/** Waits until everything committed to the outbox before the call is published (or dead). */
export const drained: Effect.Effect<void, SqlError, Outbox> = Effect.flatMap(Outbox, (o) => o.drained)

/** The dead rows, oldest first. */
export const deadLetters = (limit?: number): Effect.Effect<ReadonlyArray<DeadRow>, SqlError, Outbox> =>
  Effect.flatMap(Outbox, (o) => o.deadLetters(limit))

/** Reads backlog and lag and sets {@link backlogGauge} and {@link lagGauge}. */
export const updateMetrics: Effect.Effect<void, SqlError, Outbox> = Effect.gen(function*() {
  const outbox = yield* Outbox
  const count = yield* outbox.backlog
  const age = yield* outbox.lag
  yield* Metric.set(backlogGauge, count)
  yield* Metric.set(lagGauge, Duration.toMillis(age))
})
