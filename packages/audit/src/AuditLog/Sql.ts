/**
 * The SQL audit log (PGlite and PostgreSQL): one table partitioned by day (`PARTITION BY RANGE (at)`, one
 * partition per UTC day, created on first use), written in batches (one multi-row `INSERT` per batch, off
 * the audited path, committed with `synchronous_commit = off`), read by event id, causation or position.
 * Retention drops whole days: a partition `DROP` instead of a `DELETE` of millions of rows.
 */
import { AuditLog as Port } from "@bulwark/core"
import { type Database, Migrations } from "@bulwark/sql"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Effect, Layer, type Scope } from "effect"
import type { Options as CommonOptions } from "../AuditLog.js"
import { makeWriter } from "../internal/writer.js"

/** Settings of the SQL audit log. */
export interface Options extends CommonOptions {
  /** The table (partitions are named `<table>_dYYYYMMDD`). Default `bulwark_audit`. */
  readonly table?: string
}

/** The default table. */
export const defaultTable = "bulwark_audit"

const dayMillis = 86_400_000

const migrations = (table: string): ReadonlyArray<Migrations.Migration> => [{
  id: 1,
  name: "audit log",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${table} (
      position bigserial NOT NULL,
      event_id text NOT NULL,
      stage text NOT NULL,
      at bigint NOT NULL,
      component text NOT NULL,
      topic text,
      outcome text,
      attempt integer,
      duration_ms double precision,
      category text,
      causation_id text,
      detail text,
      message_key text,
      payload bytea,
      headers text
    ) PARTITION BY RANGE (at)`,
    `CREATE INDEX IF NOT EXISTS ${table}_event ON ${table} (event_id)`,
    // Most entries have no causation: a partial index spares their inserts.
    `CREATE INDEX IF NOT EXISTS ${table}_causation ON ${table} (causation_id) WHERE causation_id IS NOT NULL`,
    `CREATE INDEX IF NOT EXISTS ${table}_position ON ${table} (position)`
  ]
}]


interface Row {
  readonly position: number
  readonly event_id: string
  readonly stage: string
  readonly at: number
  readonly component: string
  readonly topic: string | null
  readonly outcome: string | null
  readonly attempt: number | null
  readonly duration_ms: number | null
  readonly category: string | null
  readonly causation_id: string | null
  readonly detail: string | null
  readonly message_key: string | null
  readonly payload: Uint8Array | null
  readonly headers: string | null
}

const toEntry = (row: Row): Port.Entry =>
  new Port.Entry({
    eventId: row.event_id,
    stage: row.stage as Port.Stage,
    at: Number(row.at),
    component: row.component,
    ...(row.topic === null ? {} : { topic: row.topic }),
    ...(row.outcome === null ? {} : { outcome: row.outcome }),
    ...(row.attempt === null ? {} : { attempt: row.attempt }),
    ...(row.duration_ms === null ? {} : { durationMs: row.duration_ms }),
    ...(row.category === null ? {} : { category: row.category as Port.Entry["category"] & string }),
    ...(row.causation_id === null ? {} : { causationId: row.causation_id }),
    ...(row.detail === null ? {} : { detail: JSON.parse(row.detail) }),
    ...(row.payload === null || row.message_key === null
      ? {}
      : { message: { key: row.message_key, payload: new Uint8Array(row.payload), headers: JSON.parse(row.headers ?? "{}") } })
  }, { disableValidation: true })

const dayOf = (at: number) => Math.floor(at / dayMillis) * dayMillis
const partitionName = (table: string, day: number) => `${table}_d${new Date(day).toISOString().slice(0, 10).replaceAll("-", "")}`

/** Creates the table (migrations) and the audit log over the database in context, for the scope's lifetime. */
export const make = (
  options: Options = {}
): Effect.Effect<Port.Service, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient | Database.Database | Scope.Scope> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const table = yield* Migrations.tableName(options.table ?? defaultTable)
    yield* Migrations.run(`audit:${table}`, migrations(table))
    const failed = (operation: string) => (cause: SqlError) => new Port.AuditLogError({ operation, cause })
    const days = new Set<number>()

    // A day's partition, once per process; two writers racing to create it: the loser's error is harmless.
    const ensureDay = (day: number) =>
      days.has(day) ? Effect.void : sql.unsafe(
        `CREATE TABLE IF NOT EXISTS "${partitionName(table, day)}" PARTITION OF "${table}" FOR VALUES FROM (${day}) TO (${day + dayMillis})`
      ).pipe(
        Effect.catchAll(() => Effect.void),
        Effect.zipRight(Effect.sync(() => days.add(day)))
      )

    // One statement per batch whatever its size: each column travels as one array parameter, so the server
    // parses and plans a single short text (not one with 14 placeholders per row), and the client binds 14
    // values instead of thousands. `set_config(…, true)` turns off `synchronous_commit` for this statement's
    // own transaction: entries buffered in memory are already lost by a crash, and the few milliseconds more
    // this risks spare the audited transactions an fsync queue shared with the audit log's. One round trip,
    // where a BEGIN / SET LOCAL / INSERT / COMMIT took four.
    const insert = `INSERT INTO "${table}" (event_id, stage, at, component, topic, outcome, attempt, duration_ms, category, causation_id, detail, message_key, payload, headers)
      SELECT u.event_id, u.stage, u.at, u.component, u.topic, u.outcome, u.attempt, u.duration_ms, u.category, u.causation_id,
        u.detail, u.message_key, decode(u.payload, 'hex'), u.headers
      FROM (SELECT set_config('synchronous_commit', 'off', true)) AS c,
        unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::int[], $8::float8[],
          $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
        AS u(event_id, stage, at, component, topic, outcome, attempt, duration_ms, category, causation_id, detail, message_key, payload, headers)`
    const store = (batch: ReadonlyArray<Port.Entry>) =>
      Effect.gen(function*() {
        let day = Number.NaN
        for (const entry of batch) {
          const d = dayOf(entry.at)
          if (d !== day) {
            day = d
            yield* ensureDay(d)
          }
        }
        const n = batch.length
        const columns = Array.from({ length: 14 }, () => new Array<unknown>(n))
        for (let i = 0; i < n; i++) {
          const e = batch[i]!
          columns[0]![i] = e.eventId
          columns[1]![i] = e.stage
          columns[2]![i] = e.at
          columns[3]![i] = e.component
          columns[4]![i] = e.topic ?? null
          columns[5]![i] = e.outcome ?? null
          columns[6]![i] = e.attempt ?? null
          columns[7]![i] = e.durationMs ?? null
          columns[8]![i] = e.category ?? null
          columns[9]![i] = e.causationId ?? null
          columns[10]![i] = e.detail === undefined ? null : JSON.stringify(e.detail)
          columns[11]![i] = e.message?.key ?? null
          columns[12]![i] = e.message === undefined
            ? null
            : Buffer.from(e.message.payload.buffer, e.message.payload.byteOffset, e.message.payload.byteLength).toString("hex")
          columns[13]![i] = e.message === undefined ? null : JSON.stringify(e.message.headers)
        }
        yield* sql.unsafe(insert, columns)
      }).pipe(Effect.mapError(failed("write")))

    const writer = yield* makeWriter("sql", { maxBatch: 500, ...options }, store)
    const t = sql(table)

    const timeline = (eventId: string) =>
      Effect.zipRight(
        writer.flush,
        sql<Row>`SELECT * FROM ${t} WHERE event_id = ${eventId} ORDER BY at, position`.pipe(
          Effect.map((rows) => rows.map(toEntry)),
          Effect.mapError(failed("timeline"))
        )
      )

    const caused = (eventIds: ReadonlyArray<string>) =>
      eventIds.length === 0 ? Effect.succeed([]) : Effect.zipRight(
        writer.flush,
        sql<Row>`SELECT * FROM ${t} WHERE causation_id IS NOT NULL AND ${sql.in("causation_id", eventIds)} ORDER BY at, position`.pipe(
          Effect.map((rows) => rows.map(toEntry)),
          Effect.mapError(failed("caused"))
        )
      )

    const query = (q: Port.Query) =>
      Effect.zipRight(
        writer.flush,
        sql<Row>`SELECT * FROM ${t} WHERE ${
          sql.and([
            sql`position > ${q.after ?? 0}`,
            ...(q.since === undefined ? [] : [sql`at >= ${q.since}`]),
            ...(q.until === undefined ? [] : [sql`at < ${q.until}`]),
            ...(q.stage === undefined ? [] : [sql`stage = ${q.stage}`]),
            ...(q.topic === undefined ? [] : [sql`topic = ${q.topic}`])
          ])
        } ORDER BY position LIMIT ${q.limit ?? 1000}`.pipe(
          Effect.map((rows) => rows.map((row) => ({ position: Number(row.position), entry: toEntry(row) }))),
          Effect.mapError(failed("query"))
        )
      )

    // Whole days older than the retention are dropped; the day holding the cutoff is kept whole.
    const cleanup = (retentionMillis: number) =>
      Effect.gen(function*() {
        yield* writer.flush
        const now = yield* Clock.currentTimeMillis
        const cutoff = now - retentionMillis
        const partitions = yield* sql<{ name: string }>`
          SELECT c.relname AS name FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
          WHERE p.relname = ${table}`
        let removed = 0
        for (const { name } of partitions) {
          const match = /_d(\d{4})(\d{2})(\d{2})$/.exec(name)
          if (match === null) continue
          const day = Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3]))
          if (day + dayMillis > cutoff) continue
          const counted = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(name)}`
          yield* sql`DROP TABLE IF EXISTS ${sql(name)}`
          days.delete(day)
          removed += Number(counted[0]?.n ?? 0)
        }
        return removed
      }).pipe(Effect.mapError((error) => error instanceof Port.AuditLogError ? error : failed("cleanup")(error)))

    return { write: writer.write, flush: writer.flush, timeline, caused, query, cleanup }
  })

/** Provides the {@link Port.AuditLog} over the database in context, creating its table. */
export const layer = (
  options: Options = {}
): Layer.Layer<Port.AuditLog, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient | Database.Database> =>
  Layer.scoped(Port.AuditLog, make(options))

/** Drops the table (every partition with it) and forgets its migration, for tests and throw-away runs. */
export const drop = (table: string = defaultTable): Effect.Effect<void, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const checked = yield* Migrations.tableName(table)
    yield* sql`DROP TABLE IF EXISTS ${sql(checked)} CASCADE`
    yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`audit:${checked}`}`
  })

