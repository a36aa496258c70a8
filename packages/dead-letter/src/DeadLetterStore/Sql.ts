/**
 * The SQL dead-letter store, one implementation for the embedded PGlite and a real PostgreSQL server
 * (migrations included). Payloads are stored base64 and headers and errors as JSON text, so both engines
 * read back exactly what was written. Times come from Effect's `Clock` (they are records of when things
 * happened, and `TestClock` can drive them); the replay claim is one conditional `UPDATE … RETURNING`,
 * atomic on the server, so two replays of one entry publish it once.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Envelope, Failure } from "@bulwark/core"
import * as Migrations from "@bulwark/sql/Migrations"
import { Clock, DateTime, Duration, Effect, Layer, Option, Schema } from "effect"
import * as Store from "../DeadLetterStore.js"

/** Settings of the SQL store. */
export interface Options {
  /** The table name. Default `bulwark_dead_letters`. */
  readonly table?: string
}

/** The default table name. */
export const defaultTable = "bulwark_dead_letters"

/** A table name that is not a plain SQL identifier. */
export const InvalidTableNameError = Migrations.InvalidTableName
/** A table name that is not a plain SQL identifier. */
export type InvalidTableNameError = Migrations.InvalidTableName

/** The migrations of one dead-letter table. */
export const migrations = (table: string): ReadonlyArray<Migrations.Migration> => [{
  id: 1,
  name: "create dead-letter table",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${table} (
      id text PRIMARY KEY,
      seq bigserial NOT NULL,
      message_id text NOT NULL,
      origin_topic text NOT NULL,
      message_key text NOT NULL,
      payload text NOT NULL,
      headers text NOT NULL,
      type text,
      category text NOT NULL,
      error text NOT NULL,
      attempts integer NOT NULL,
      first_failed_at bigint NOT NULL,
      last_failed_at bigint NOT NULL,
      replay_status text NOT NULL,
      replayed_at bigint,
      replay_count integer NOT NULL DEFAULT 0,
      replay_claimed_until bigint,
      UNIQUE (origin_topic, message_id)
    )`,
    `CREATE INDEX IF NOT EXISTS ${table}_triage ON ${table} (replay_status, category, first_failed_at, seq)`,
    `CREATE INDEX IF NOT EXISTS ${table}_last_failed ON ${table} (last_failed_at)`
  ]
}, {
  id: 2,
  name: "replay claim fencing token",
  statements: [`ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS replay_token bigint NOT NULL DEFAULT 0`]
}, {
  id: 3,
  name: "failure groups and the shared replay pace",
  statements: [
    // Filled by `add`; rows written before this migration are filled when the store starts.
    `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS fingerprint text`,
    `CREATE INDEX IF NOT EXISTS ${table}_fingerprint ON ${table} (fingerprint, replay_status)`,
    `CREATE TABLE IF NOT EXISTS ${table}_pace (scope text PRIMARY KEY, last_at bigint NOT NULL)`
  ]
}]

interface Row {
  readonly id: string
  readonly message_id: string
  readonly origin_topic: string
  readonly message_key: string
  readonly payload: string
  readonly headers: string
  readonly type: string | null
  readonly category: string
  readonly error: string
  readonly attempts: number
  readonly first_failed_at: number
  readonly last_failed_at: number
  readonly replay_status: string
  readonly replayed_at: number | null
  readonly replay_count: number
  readonly replay_token: number | string
}

const decodeEntry = Schema.decodeUnknown(Store.DeadLetterEntry)

const toEntry = (row: Row) =>
  Effect.try(() => ({
    id: row.id,
    messageId: row.message_id,
    originTopic: row.origin_topic,
    key: row.message_key,
    payload: row.payload,
    headers: JSON.parse(row.headers) as unknown,
    type: row.type,
    category: row.category,
    error: JSON.parse(row.error) as unknown,
    attempts: Number(row.attempts),
    firstFailedAt: new Date(Number(row.first_failed_at)).toISOString(),
    lastFailedAt: new Date(Number(row.last_failed_at)).toISOString(),
    replay: row.replay_status,
    replayedAt: row.replayed_at === null ? null : new Date(Number(row.replayed_at)).toISOString(),
    replayCount: Number(row.replay_count)
  })).pipe(Effect.flatMap(decodeEntry))

const encodeRecord = Schema.encodeSync(Failure.FailureRecord)

/** Creates the store over the `SqlClient` in context, running its migrations first. */
export const make = (options: Options = {}): Effect.Effect<
  Store.Service,
  SqlError | InvalidTableNameError,
  SqlClient.SqlClient
> =>
  Effect.gen(function*() {
    const table = yield* Migrations.tableName(options.table ?? defaultTable)
    const sql = yield* SqlClient.SqlClient
    yield* Migrations.run(`dead-letter:${table}`, migrations(table))
    const t = sql(table)
    const pace = sql(`${table}_pace`)
    // Fingerprints of rows stored before failure groups existed.
    const unfingerprinted = yield* sql<{ id: string; origin_topic: string; error: string }>`
      SELECT id, origin_topic, error FROM ${t} WHERE fingerprint IS NULL`
    for (const row of unfingerprinted) {
      const error = JSON.parse(row.error) as { tag?: unknown; message?: unknown }
      const fingerprint = Store.fingerprintOf({ tag: String(error.tag ?? ""), message: String(error.message ?? "") }, row.origin_topic)
      yield* sql`UPDATE ${t} SET fingerprint = ${fingerprint} WHERE id = ${row.id}`
    }

    const wrap = (operation: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.mapError(effect, (cause) => new Store.DeadLetterStoreError({ operation, cause }))
    const entries = (rows: ReadonlyArray<Row>) => Effect.forEach(rows, toEntry)
    const first = (rows: ReadonlyArray<Row>) =>
      rows.length === 0 ? Effect.succeed(Option.none()) : Effect.map(toEntry(rows[0]!), Option.some)

    const where = (filter: Store.Filter) =>
      sql.and([
        ...(filter.category !== undefined ? [sql`category = ${filter.category}`] : []),
        ...(filter.type !== undefined ? [sql`type = ${filter.type}`] : []),
        ...(filter.originTopic !== undefined ? [sql`origin_topic = ${filter.originTopic}`] : []),
        ...(filter.replay !== undefined ? [sql.in("replay_status", Store.statuses(filter.replay))] : []),
        ...(filter.from !== undefined ? [sql`last_failed_at >= ${filter.from.epochMillis}`] : []),
        ...(filter.to !== undefined ? [sql`last_failed_at < ${filter.to.epochMillis}`] : []),
        ...(filter.fingerprint !== undefined ? [sql`fingerprint = ${filter.fingerprint}`] : [])
      ])

    // A claim still holds when its entry is being replayed under it (a bare id: under any claim).
    const held = (claim: Store.ReplayClaim) => {
      const token = Store.claimToken(claim)
      return sql.and([
        sql`id = ${Store.claimId(claim)}`,
        sql`replay_status = 'replaying'`,
        ...(token === undefined ? [] : [sql`replay_token = ${token}`])
      ])
    }

    const store: Store.Service = {
      add: (input) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const id = yield* Envelope.uuid
          const origin = Store.replayOrigin(input.message.headers)
          const generation = input.replayGeneration ?? origin.generation
          // A replayed message travels under its own id: its entry is the one it was replayed from.
          const replayedFrom = origin.entryId === undefined ? [] : yield* sql<{ message_id: string }>`
            SELECT message_id FROM ${t} WHERE id = ${origin.entryId} AND origin_topic = ${input.message.topic}`
          const messageId = replayedFrom[0]?.message_id ?? input.message.id
          // `isNewFailure` in SQL, judged on the row as it is when the upsert takes it (no read-then-write race).
          const newFailure = generation === undefined ? sql`TRUE` : sql`(${generation}::int > ${t}.replay_count
            OR (${generation}::int = ${t}.replay_count AND ${t}.replay_status <> 'replaying'))`
          const rows = yield* sql<Row>`
            INSERT INTO ${t} (id, message_id, origin_topic, message_key, payload, headers, type, category, error,
              attempts, first_failed_at, last_failed_at, replay_status, replay_count, fingerprint)
            VALUES (${id}, ${messageId}, ${input.message.topic}, ${input.message.key},
              ${Buffer.from(input.message.payload).toString("base64")},
              ${JSON.stringify(Store.originalHeaders(input.message.headers))}, ${Store.typeOf(input.message.payload)},
              ${input.category}, ${JSON.stringify(encodeRecord(input.error))}, ${input.attempts}, ${now}, ${now},
              'pending', ${generation ?? 0}, ${Store.fingerprintOf(input.error, input.message.topic)})
            ON CONFLICT (origin_topic, message_id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
              message_key = EXCLUDED.message_key, payload = EXCLUDED.payload, headers = EXCLUDED.headers,
              type = EXCLUDED.type, category = EXCLUDED.category, error = EXCLUDED.error,
              attempts = EXCLUDED.attempts, last_failed_at = EXCLUDED.last_failed_at,
              replay_status = 'pending', replay_claimed_until = NULL,
              replay_count = GREATEST(${t}.replay_count, ${generation ?? 0}::int)
            WHERE ${newFailure}
            RETURNING *`
          if (rows.length > 0) return yield* toEntry(rows[0]!)
          // A stale copy: the entry stays as it is.
          const current = yield* sql<Row>`
            SELECT * FROM ${t} WHERE origin_topic = ${input.message.topic} AND message_id = ${messageId}`
          if (current.length === 0) {
            return yield* Effect.fail(new Error("the entry was purged while a stale copy of it was being stored"))
          }
          return yield* toEntry(current[0]!)
        }).pipe(wrap("add")),
      list: (filter = {}) =>
        sql<Row>`SELECT * FROM ${t} WHERE ${where(filter)} ORDER BY first_failed_at, seq
          ${filter.limit !== undefined ? sql`LIMIT ${filter.limit}` : sql``}`.pipe(
          Effect.flatMap(entries),
          wrap("list")
        ),
      get: (id) => sql<Row>`SELECT * FROM ${t} WHERE id = ${id}`.pipe(Effect.flatMap(first), wrap("get")),
      depth: sql<{ n: number }>`SELECT count(*)::int AS n FROM ${t} WHERE replay_status <> 'replayed'`.pipe(
        Effect.map((rows) => Number(rows[0]?.n ?? 0)),
        wrap("depth")
      ),
      claimReplay: (id, lease) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const until = now + Duration.toMillis(Duration.decode(lease))
          const rows = yield* sql<Row>`
            UPDATE ${t} SET replay_status = 'replaying', replay_claimed_until = ${until}, replay_token = replay_token + 1
            WHERE id = ${id} AND (replay_status = 'pending'
              OR (replay_status = 'replaying' AND replay_claimed_until <= ${now}))
            RETURNING *`
          if (rows.length === 0) return Option.none()
          const entry = yield* toEntry(rows[0]!)
          return Option.some(new Store.ClaimedEntry({ ...entry, claimToken: Number(rows[0]!.replay_token) }))
        }).pipe(wrap("claimReplay")),
      markReplayed: (claim) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          sql<{ id: string }>`
            UPDATE ${t} SET replay_status = 'replayed', replayed_at = ${now}, replay_count = replay_count + 1,
              replay_claimed_until = NULL
            WHERE ${held(claim)}
            RETURNING id`).pipe(Effect.map((rows) => rows.length > 0), wrap("markReplayed")),
      releaseReplay: (claim) =>
        sql<{ id: string }>`
          UPDATE ${t} SET replay_status = 'pending', replay_claimed_until = NULL
          WHERE ${held(claim)}
          RETURNING id`.pipe(Effect.map((rows) => rows.length > 0), wrap("releaseReplay")),
      groups: (filter = {}) =>
        Effect.gen(function*() {
          const admitted = { ...filter, replay: filter.replay ?? Store.unreplayed }
          const rows = yield* sql<{ fingerprint: string; n: number; first: number | string; last: number | string; sample: string }>`
            SELECT fingerprint, count(*)::int AS n, min(first_failed_at) AS first, max(last_failed_at) AS last,
              (array_agg(id ORDER BY first_failed_at, seq))[1] AS sample
            FROM ${t} WHERE ${where(admitted)}
            GROUP BY fingerprint ORDER BY n DESC, first
            ${filter.limit !== undefined ? sql`LIMIT ${filter.limit}` : sql``}`
          if (rows.length === 0) return []
          const samples = yield* Effect.flatMap(
            sql<Row>`SELECT * FROM ${t} WHERE ${sql.in("id", rows.map((row) => row.sample))}`,
            entries
          )
          const byId = new Map(samples.map((entry) => [entry.id, entry]))
          return rows.flatMap((row) => {
            const sample = byId.get(row.sample)
            // A sample purged between the two reads: its group is gone with it.
            if (sample === undefined) return []
            return [Store.groupOf(sample, Number(row.n), DateTime.unsafeMake(Number(row.first)), DateTime.unsafeMake(Number(row.last)))]
          })
        }).pipe(wrap("groups")),
      takeReplaySlot: (spacing) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          // Whole milliseconds, rounded up: never faster than asked.
          const step = Math.ceil(Duration.toMillis(Duration.decode(spacing)))
          // One row per store, updated under its row lock: every replayer's slot follows the previous one.
          const rows = yield* sql<{ last_at: number | string }>`
            INSERT INTO ${pace} (scope, last_at) VALUES ('replay', ${now})
            ON CONFLICT (scope) DO UPDATE SET last_at = GREATEST(${pace}.last_at + ${step}, ${now})
            RETURNING last_at`
          return Number(rows[0]!.last_at)
        }).pipe(wrap("takeReplaySlot")),
      purge: (before) =>
        sql<{ n: number }>`
          WITH gone AS (DELETE FROM ${t} WHERE last_failed_at < ${DateTime.toEpochMillis(before)} RETURNING 1)
          SELECT count(*)::int AS n FROM gone`.pipe(
          Effect.map((rows) => Number(rows[0]?.n ?? 0)),
          wrap("purge")
        )
    }
    return store
  })

/** Provides the SQL store as the `DeadLetterStore` (migrations included). Needs a `SqlClient`. */
export const layer = (options: Options = {}): Layer.Layer<
  Store.DeadLetterStore,
  SqlError | InvalidTableNameError,
  SqlClient.SqlClient
> => Layer.effect(Store.DeadLetterStore, make(options))

/** Drops the store's tables (entries and the replay pace) and forgets their migrations (tests, teardown). */
export const drop = (table: string = defaultTable): Effect.Effect<void, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const checked = yield* Migrations.tableName(table)
    yield* sql`DROP TABLE IF EXISTS ${sql(`${checked}_pace`)}`
    yield* sql`DROP TABLE IF EXISTS ${sql(checked)}`
    yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`dead-letter:${checked}`}`
  })
