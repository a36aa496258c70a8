/**
 * The SQL dispatch store (PGlite and PostgreSQL, any `@bulwark/sql` database): endpoints, messages,
 * deliveries and attempts in four tables named after one prefix. Deliveries are claimed with
 * `FOR UPDATE SKIP LOCKED` under a lease and a fresh fencing token; an attempt is recorded in the same
 * statement that checks the token, so a worker that lost its claim records nothing. `enqueue` runs on the
 * caller's `sql.withTransaction` connection when there is one.
 */
import { Migrations } from "@bulwark/sql"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Layer, Option } from "effect"
import {
  type Claim,
  decodeAttempt,
  type DeliveryRecord,
  type DeliveryState,
  DispatchStore,
  DispatchStoreError,
  encodeAttempt,
  type EndpointRecord,
  type FailReason,
  type Filter,
  type Service
} from "../DispatchStore.js"

/** Settings of the SQL store. */
export interface Options {
  /** The prefix of the four tables. Default `bulwark_webhook`. */
  readonly table?: string
}

/** The default table prefix. */
export const defaultTable = "bulwark_webhook"

const migrations = (t: string): ReadonlyArray<Migrations.Migration> => [{
  id: 1,
  name: "dispatch tables",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${t}_endpoints (
      id text PRIMARY KEY,
      url text NOT NULL,
      secrets text NOT NULL,
      disabled boolean NOT NULL DEFAULT false,
      disabled_reason text,
      failing_since bigint
    )`,
    `CREATE TABLE IF NOT EXISTS ${t}_messages (
      id text PRIMARY KEY,
      body bytea NOT NULL,
      content_type text,
      headers text,
      created_at bigint NOT NULL
    )`,
    `CREATE TABLE IF NOT EXISTS ${t}_deliveries (
      message_id text NOT NULL,
      endpoint_id text NOT NULL,
      state text NOT NULL DEFAULT 'pending',
      attempts integer NOT NULL DEFAULT 0,
      due_at bigint NOT NULL,
      created_at bigint NOT NULL,
      updated_at bigint NOT NULL,
      fail_reason text,
      claim_token text,
      claimed_until bigint NOT NULL DEFAULT 0,
      PRIMARY KEY (message_id, endpoint_id)
    )`,
    `CREATE INDEX IF NOT EXISTS ${t}_deliveries_due ON ${t}_deliveries (due_at) WHERE state = 'pending'`,
    `CREATE INDEX IF NOT EXISTS ${t}_deliveries_endpoint ON ${t}_deliveries (endpoint_id, created_at)`,
    `CREATE TABLE IF NOT EXISTS ${t}_attempts (
      id bigserial PRIMARY KEY,
      message_id text NOT NULL,
      endpoint_id text NOT NULL,
      record text NOT NULL
    )`,
    `CREATE INDEX IF NOT EXISTS ${t}_attempts_message ON ${t}_attempts (message_id, id)`
  ]
}]

interface EndpointRow {
  readonly id: string
  readonly url: string
  readonly secrets: string
  readonly disabled: boolean
  readonly disabled_reason: string | null
  readonly failing_since: string | number | null
}

interface DeliveryRow {
  readonly message_id: string
  readonly endpoint_id: string
  readonly state: string
  readonly attempts: number
  readonly due_at: string | number
  readonly created_at: string | number
  readonly updated_at: string | number
  readonly fail_reason: string | null
}

interface ClaimRow extends DeliveryRow {
  readonly claim_token: string
  readonly url: string
  readonly secrets: string
  readonly disabled: boolean
  readonly disabled_reason: string | null
  readonly failing_since: string | number | null
  readonly body: Uint8Array
  readonly content_type: string | null
  readonly headers: string | null
  readonly message_created_at: string | number
}

const toEndpoint = (row: Omit<EndpointRow, "id">, id: string): EndpointRecord => ({
  id,
  url: row.url,
  secrets: JSON.parse(row.secrets) as Array<string>,
  disabled: row.disabled,
  ...(row.disabled_reason === null ? {} : { disabledReason: row.disabled_reason }),
  ...(row.failing_since === null ? {} : { failingSince: Number(row.failing_since) })
})

const toDelivery = (row: DeliveryRow): DeliveryRecord => ({
  messageId: row.message_id,
  endpointId: row.endpoint_id,
  state: row.state as DeliveryState,
  attempts: Number(row.attempts),
  dueAt: Number(row.due_at),
  createdAt: Number(row.created_at),
  updatedAt: Number(row.updated_at),
  ...(row.fail_reason === null ? {} : { failReason: row.fail_reason as FailReason })
})

const toBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/** Creates the tables (migrations) and the store over the database in context. */
export const make = (
  options: Options = {}
): Effect.Effect<Service, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = yield* Migrations.tableName(options.table ?? defaultTable)
    yield* Migrations.run(`webhook-dispatch:${t}`, migrations(t))
    const endpoints = sql(`${t}_endpoints`)
    const messages = sql(`${t}_messages`)
    const deliveries = sql(`${t}_deliveries`)
    const attempts = sql(`${t}_attempts`)
    const failed = (operation: string) => (cause: SqlError) => new DispatchStoreError({ operation, cause })
    /** The conditions of a filter, as one SQL fragment. */
    const where = (filter: Filter) =>
      sql.and([
        sql`true`,
        ...(filter.messageId === undefined ? [] : [sql`message_id = ${filter.messageId}`]),
        ...(filter.endpointId === undefined ? [] : [sql`endpoint_id = ${filter.endpointId}`]),
        ...(filter.state === undefined ? [] : [sql`state = ${filter.state}`]),
        ...(filter.since === undefined ? [] : [sql`created_at >= ${filter.since}`])
      ])

    const service: Service = {
      putEndpoint: (endpoint) =>
        sql`INSERT INTO ${endpoints} (id, url, secrets) VALUES (${endpoint.id}, ${endpoint.url}, ${JSON.stringify(endpoint.secrets)})
          ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, secrets = EXCLUDED.secrets`.pipe(
          Effect.asVoid,
          Effect.mapError(failed("putEndpoint"))
        ),
      endpoint: (id) =>
        sql<EndpointRow>`SELECT * FROM ${endpoints} WHERE id = ${id}`.pipe(
          Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), (row) => toEndpoint(row, row.id))),
          Effect.mapError(failed("endpoint"))
        ),
      endpoints: sql<EndpointRow>`SELECT * FROM ${endpoints} ORDER BY id`.pipe(
        Effect.map((rows) => rows.map((row) => toEndpoint(row, row.id))),
        Effect.mapError(failed("endpoints"))
      ),
      updateEndpoint: (id, patch) => {
        const sets = [
          ...(patch.disabled === undefined ? [] : [sql`disabled = ${patch.disabled}`]),
          ...(patch.disabledReason === undefined ? [] : [sql`disabled_reason = ${patch.disabledReason}`]),
          ...(patch.failingSince === undefined ? [] : [sql`failing_since = ${patch.failingSince}`])
        ]
        if (sets.length === 0) return Effect.void
        return sql`UPDATE ${endpoints} SET ${sql.csv(sets)} WHERE id = ${id}`.pipe(
          Effect.asVoid,
          Effect.mapError(failed("updateEndpoint"))
        )
      },
      enqueue: (message, endpointIds) =>
        Effect.gen(function*() {
          const ids = [...new Set(endpointIds)]
          yield* sql`INSERT INTO ${messages} (id, body, content_type, headers, created_at)
            VALUES (${message.id}, ${toBuffer(message.body)}, ${message.contentType ?? null},
              ${message.headers === undefined ? null : JSON.stringify(message.headers)}, ${message.createdAt})
            ON CONFLICT (id) DO NOTHING`
          if (ids.length === 0) return 0
          const rows = yield* sql<{ message_id: string }>`INSERT INTO ${deliveries}
            (message_id, endpoint_id, due_at, created_at, updated_at)
            SELECT ${message.id}, e, ${message.createdAt}, ${message.createdAt}, ${message.createdAt}
            FROM json_array_elements_text(${JSON.stringify(ids)}::json) AS e
            ON CONFLICT (message_id, endpoint_id) DO NOTHING RETURNING message_id`
          return rows.length
        }).pipe(Effect.mapError(failed("enqueue"))),
      claim: ({ leaseMillis, limit, now }) =>
        Effect.gen(function*() {
          if (limit <= 0) return []
          // One token per claim statement, suffixed per row: unique across workers without a round trip.
          const token = `${now.toString(36)}-${Math.random().toString(36).slice(2)}`
          const rows = yield* sql<ClaimRow>`
            WITH due AS (
              SELECT message_id, endpoint_id FROM ${deliveries}
              WHERE state = 'pending' AND due_at <= ${now} AND claimed_until <= ${now}
              ORDER BY due_at
              LIMIT ${limit}
              FOR UPDATE SKIP LOCKED
            ), claimed AS (
              UPDATE ${deliveries} d
              SET claim_token = ${token} || ':' || d.message_id || ':' || d.endpoint_id, claimed_until = ${now + leaseMillis}
              FROM due WHERE d.message_id = due.message_id AND d.endpoint_id = due.endpoint_id
              RETURNING d.*
            )
            SELECT c.*, e.url, e.secrets, e.disabled, e.disabled_reason, e.failing_since,
              m.body, m.content_type, m.headers, m.created_at AS message_created_at
            FROM claimed c
            JOIN ${endpoints} e ON e.id = c.endpoint_id
            JOIN ${messages} m ON m.id = c.message_id
            ORDER BY c.due_at`
          return rows.map((row): Claim => ({
            delivery: toDelivery(row),
            endpoint: toEndpoint(row, row.endpoint_id),
            message: {
              id: row.message_id,
              body: new Uint8Array(row.body),
              ...(row.content_type === null ? {} : { contentType: row.content_type }),
              ...(row.headers === null ? {} : { headers: JSON.parse(row.headers) as Record<string, string> }),
              createdAt: Number(row.message_created_at)
            },
            token: row.claim_token
          }))
        }).pipe(Effect.mapError(failed("claim"))),
      settle: (token, delivery, attempt, settlement, now) => {
        const state = settlement._tag === "Retry" ? "pending" : settlement._tag === "Delivered" ? "delivered" : "failed"
        const dueAt = settlement._tag === "Retry" ? settlement.dueAt : null
        const reason = settlement._tag === "Failed" ? settlement.reason : null
        const record = attempt === undefined ? null : encodeAttempt(attempt)
        // The token check, the state change and the attempt's record are one statement: all or nothing.
        return sql<{ n: number }>`
          WITH settled AS (
            UPDATE ${deliveries}
            SET state = ${state}, due_at = COALESCE(${dueAt}::bigint, due_at), fail_reason = ${reason},
              attempts = attempts + ${record === null ? 0 : 1}, updated_at = ${now}, claim_token = NULL, claimed_until = 0
            WHERE message_id = ${delivery.messageId} AND endpoint_id = ${delivery.endpointId}
              AND claim_token = ${token} AND state = 'pending'
            RETURNING message_id, endpoint_id
          ), recorded AS (
            INSERT INTO ${attempts} (message_id, endpoint_id, record)
            SELECT message_id, endpoint_id, ${record}::text FROM settled WHERE ${record}::text IS NOT NULL
          )
          SELECT count(*)::int AS n FROM settled`.pipe(
          Effect.map((rows) => Number(rows[0]?.n ?? 0) === 1),
          Effect.mapError(failed("settle"))
        )
      },
      attempts: (messageId) =>
        sql<{ record: string }>`SELECT record FROM ${attempts} WHERE message_id = ${messageId} ORDER BY id`.pipe(
          Effect.map((rows) => rows.map((row) => decodeAttempt(row.record))),
          Effect.mapError(failed("attempts"))
        ),
      deliveries: (filter) =>
        sql<DeliveryRow>`SELECT * FROM ${deliveries} WHERE ${where(filter)}
          ORDER BY created_at, message_id, endpoint_id LIMIT ${filter.limit ?? 100}`.pipe(
          Effect.map((rows) => rows.map(toDelivery)),
          Effect.mapError(failed("deliveries"))
        ),
      requeue: (filter, now) =>
        sql<{ n: number }>`
          WITH chosen AS (
            SELECT message_id, endpoint_id FROM ${deliveries}
            WHERE ${where(filter)}
              AND (state = 'failed' OR (${filter.includeDelivered === true} AND state = 'delivered'))
            ORDER BY created_at
            LIMIT ${filter.limit ?? null}
            FOR UPDATE
          ), requeued AS (
            UPDATE ${deliveries} d
            SET state = 'pending', due_at = ${now}, updated_at = ${now}, fail_reason = NULL, claim_token = NULL, claimed_until = 0
            FROM chosen WHERE d.message_id = chosen.message_id AND d.endpoint_id = chosen.endpoint_id
            RETURNING 1
          )
          SELECT count(*)::int AS n FROM requeued`.pipe(
          Effect.map((rows) => Number(rows[0]?.n ?? 0)),
          Effect.mapError(failed("requeue"))
        ),
      nextDue: sql<{ at: string | number | null }>`
        SELECT min(GREATEST(due_at, claimed_until)) AS at FROM ${deliveries} WHERE state = 'pending'`.pipe(
        Effect.map((rows) => Option.map(Option.fromNullable(rows[0]?.at), Number)),
        Effect.mapError(failed("nextDue"))
      )
    }
    return service
  })

/** Provides the SQL store over the database in context. */
export const layer = (
  options: Options = {}
): Layer.Layer<DispatchStore, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient> =>
  Layer.effect(DispatchStore, make(options))

/** Drops the store's tables and forgets their migrations (tests, teardown). */
export const drop = (table: string = defaultTable): Effect.Effect<void, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = yield* Migrations.tableName(table)
    for (const suffix of ["attempts", "deliveries", "messages", "endpoints"]) yield* sql`DROP TABLE IF EXISTS ${sql(`${t}_${suffix}`)}`
    yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`webhook-dispatch:${t}`}`
  })
