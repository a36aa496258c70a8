/**
 * The SQL driver of {@link RateLimiterStore}, one implementation for the embedded PGlite and a PostgreSQL
 * server (migrations included). A reservation is one short transaction: an upsert that takes the key's row
 * lock and returns its state with the server's clock read after the lock, the decision, and the update. Every
 * process over the database therefore shares one limit and one timeline. Rows whose state no longer matters
 * are deleted now and then.
 *
 * Each reservation costs a few round trips under a row lock, so one key sustains a few hundred grants a
 * second on PostgreSQL; use the Redis driver for hotter keys.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Migrations from "@bulwark/sql/Migrations"
import { Effect, Layer } from "effect"
import * as Algorithm from "../internal/algorithm.js"
import { RateLimiterStore, RateLimiterStoreError } from "../RateLimiterStore.js"

/** Settings of the SQL store. */
export interface Options {
  /** The table name. Default `bulwark_rate_limits`. */
  readonly table?: string
}

/** The default table name. */
export const defaultTable = "bulwark_rate_limits"

/** The migrations of one rate-limit table. */
export const migrations = (table: string): ReadonlyArray<Migrations.Migration> => [{
  id: 1,
  name: "create rate-limit table",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${table} (
      key text PRIMARY KEY,
      state text NOT NULL,
      horizon double precision NOT NULL
    )`,
    `CREATE INDEX IF NOT EXISTS ${table}_horizon ON ${table} (horizon)`
  ]
}]

const fresh = JSON.stringify(Algorithm.initial())

/** Builds the store over the `SqlClient` in context, migrating its table first. */
export const make = (options: Options = {}): Effect.Effect<
  RateLimiterStore["Type"],
  SqlError | Migrations.InvalidTableName,
  SqlClient.SqlClient
> =>
  Effect.gen(function*() {
    const table = yield* Migrations.tableName(options.table ?? defaultTable)
    yield* Migrations.run(`rate-limit:${table}`, migrations(table))
    const sql = yield* SqlClient.SqlClient
    const t = sql(table)
    let reservations = 0
    return RateLimiterStore.of({
      reserve: (key, rule, permits, maxWaitMillis) =>
        sql.withTransaction(Effect.gen(function*() {
          // The no-op update takes the row lock; RETURNING is computed after it, so `now` is read while
          // holding it and grants on one key are ordered by the time they were decided.
          const rows = yield* sql<{ state: string; now: number | string }>`
            INSERT INTO ${t} (key, state, horizon) VALUES (${key}, ${fresh}, 0)
            ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key
            RETURNING state, floor(extract(epoch from clock_timestamp()) * 1000)::float8 AS now`
          const row = rows[0]!
          const now = Number(row.now)
          const state = JSON.parse(row.state) as Algorithm.State
          const decision = Algorithm.reserve(state, rule, now, permits, maxWaitMillis)
          if (decision.granted) {
            yield* sql`UPDATE ${t} SET state = ${JSON.stringify(state)}, horizon = ${Algorithm.horizon(state, rule)}
              WHERE key = ${key}`
          }
          return decision
        })).pipe(
          Effect.mapError((cause) => new RateLimiterStoreError({ operation: "reserve", key, cause })),
          // Outside the reservation's transaction: it takes no lock while holding one. A failed sweep costs
          // nothing but space, so it is logged and the next one tries again.
          Effect.tap(() =>
            ++reservations % 1_000 !== 0 ? Effect.void : sql`DELETE FROM ${t}
              WHERE horizon < floor(extract(epoch from clock_timestamp()) * 1000)`.pipe(
              Effect.catchAll((cause) => Effect.logWarning("rate limiter: sweeping idle keys failed", cause))
            )
          )
        ),
      release: (key, rule, permits, at) =>
        sql.withTransaction(Effect.gen(function*() {
          const rows = yield* sql<{ state: string }>`SELECT state FROM ${t} WHERE key = ${key} FOR UPDATE`
          if (rows.length === 0) return
          const state = JSON.parse(rows[0]!.state) as Algorithm.State
          if (!Algorithm.release(state, rule, permits, at)) return
          yield* sql`UPDATE ${t} SET state = ${JSON.stringify(state)}, horizon = ${Algorithm.horizon(state, rule)}
            WHERE key = ${key}`
        })).pipe(Effect.mapError((cause) => new RateLimiterStoreError({ operation: "release", key, cause })))
    })
  })

/** The SQL store as a layer over the `SqlClient` in context. */
export const layer = (options: Options = {}): Layer.Layer<
  RateLimiterStore,
  SqlError | Migrations.InvalidTableName,
  SqlClient.SqlClient
> => Layer.effect(RateLimiterStore, make(options))

/** Drops the store's table and forgets its migrations (tests, teardown). */
export const drop = (table: string = defaultTable): Effect.Effect<void, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const checked = yield* Migrations.tableName(table)
    yield* sql`DROP TABLE IF EXISTS ${sql(checked)}`
    yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`rate-limit:${checked}`}`
  })
