/**
 * The SQL idempotency store, one implementation for the embedded PGlite and a real PostgreSQL server.
 *
 * A claim is one atomic statement — `INSERT … ON CONFLICT (key) DO UPDATE … WHERE the lease or the
 * retention has expired … RETURNING` — so concurrent claimants of one key get exactly one Fresh answer.
 * Time is the **database server's** clock (`clock_timestamp()`), never the workers', so clock skew
 * between workers cannot shorten or stretch a lease. Expired rows are purged by a background fiber every
 * `purgeInterval` (and on demand with `purgeExpired`), which keeps the table bounded.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Migrations from "@bulwark/sql/Migrations"
import { Duration, Effect, Layer, Schedule } from "effect"
import * as Store from "../IdempotencyStore.js"

/** Settings of the SQL store. */
export interface Options {
  /** The table name. Default `bulwark_idempotency`. */
  readonly table?: string
  /** How often expired rows are deleted in the background. Default 1 minute. */
  readonly purgeInterval?: Duration.DurationInput
}

/** A table name that is not a plain SQL identifier. */
export const InvalidTableNameError = Migrations.InvalidTableName
/** A table name that is not a plain SQL identifier. */
export type InvalidTableNameError = Migrations.InvalidTableName

/** The default table name. */
export const defaultTable = "bulwark_idempotency"

/** The migrations of one idempotency table. */
export const migrations = (table: string): ReadonlyArray<Migrations.Migration> => [{
  id: 1,
  name: "create idempotency table",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${table} (
      key text PRIMARY KEY,
      token bigint NOT NULL,
      state text NOT NULL,
      lease_until bigint NOT NULL,
      expires_at bigint NOT NULL,
      retention_ms bigint NOT NULL,
      outcome text
    )`,
    `CREATE INDEX IF NOT EXISTS ${table}_expires_at ON ${table} (expires_at)`
  ]
}]

const nowMs = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

interface Row {
  readonly state: string
  readonly lease_until: number
  readonly expires_at: number
  readonly outcome: string | null
  readonly now: number
}

/** Creates the store over the `SqlClient` in context, running its migrations first. */
export const make = (options: Options = {}): Effect.Effect<
  Store.Service,
  SqlError | InvalidTableNameError,
  SqlClient.SqlClient
> =>
  Effect.gen(function*() {
    const table = yield* Migrations.tableName(options.table ?? defaultTable)
    const sql = yield* SqlClient.SqlClient
    yield* Migrations.run(`idempotency:${table}`, migrations(table))
    const t = sql(table)
    const now = sql.literal(nowMs)

    const failWith = (operation: "claim" | "complete" | "release" | "purge", key: string) => (cause: unknown) =>
      new Store.IdempotencyStoreError({ operation, key, cause })

    const tryClaim = (key: string, lease: number, retention: number) =>
      Effect.gen(function*() {
        const won = yield* sql<{ token: number; lease_until: number }>`
          INSERT INTO ${t} AS cur (key, token, state, lease_until, expires_at, retention_ms, outcome)
          SELECT ${key}, n.ms, 'in_progress', n.ms + ${lease}, n.ms + ${lease} + ${retention}, ${retention}, NULL
          FROM (SELECT ${now} AS ms) AS n
          ON CONFLICT (key) DO UPDATE SET
            token = GREATEST(cur.token + 1, EXCLUDED.token),
            state = 'in_progress',
            lease_until = EXCLUDED.lease_until,
            expires_at = EXCLUDED.expires_at,
            retention_ms = EXCLUDED.retention_ms,
            outcome = NULL
          WHERE cur.expires_at <= EXCLUDED.token
             OR (cur.state = 'in_progress' AND cur.lease_until <= EXCLUDED.token)
          RETURNING token, lease_until`
        if (won.length > 0) return Store.fresh(Number(won[0]!.token), Number(won[0]!.lease_until))
        const rows = yield* sql<Row>`
          SELECT state, lease_until, expires_at, outcome, ${now} AS now FROM ${t} WHERE key = ${key}`
        const row = rows[0]
        // Gone or expired since the insert lost: claim again.
        if (row === undefined || Number(row.expires_at) <= Number(row.now)) return undefined
        if (row.state === "completed") return Store.completed(row.outcome === null ? null : JSON.parse(row.outcome))
        if (Number(row.lease_until) > Number(row.now)) return Store.inProgress(Number(row.lease_until), Number(row.now))
        return undefined
      })

    const claim: Store.Service["claim"] = (key, claimOptions) => {
      const lease = Duration.toMillis(Duration.decode(claimOptions.lease))
      const retention = Duration.toMillis(Duration.decode(claimOptions.retention ?? Store.defaultRetention))
      return tryClaim(key, lease, retention).pipe(
        Effect.repeat({ while: (answer) => answer === undefined, times: 5 }),
        Effect.flatMap((answer) =>
          answer === undefined ? Effect.fail(new Error("the key kept changing under the claim")) : Effect.succeed(answer)
        ),
        Effect.mapError(failWith("claim", key))
      )
    }

    const owned = (key: string, token: number) =>
    (rows: ReadonlyArray<unknown>) =>
      rows.length > 0 ? Effect.void : Effect.fail(new Store.LeaseLostError({ key, token }))

    const store: Store.Service = {
      claim,
      complete: (key, token, outcome) =>
        Effect.flatMap(Store.encodeOutcome(key, outcome), (json) =>
          sql`
            UPDATE ${t} SET state = 'completed', outcome = ${json}, expires_at = ${now} + retention_ms
            WHERE key = ${key} AND token = ${token} AND state = 'in_progress' AND expires_at > ${now}
            RETURNING key`.pipe(
            Effect.mapError(failWith("complete", key)),
            Effect.flatMap(owned(key, token))
          )),
      release: (key, token) =>
        sql`
          UPDATE ${t} SET lease_until = ${now}
          WHERE key = ${key} AND token = ${token} AND state = 'in_progress' AND expires_at > ${now}
          RETURNING key`.pipe(
          Effect.mapError(failWith("release", key)),
          Effect.flatMap(owned(key, token))
        ),
      purgeExpired: sql<{ n: number }>`
        WITH gone AS (DELETE FROM ${t} WHERE expires_at <= ${now} RETURNING 1)
        SELECT count(*)::int AS n FROM gone`.pipe(
        Effect.map((rows) => Number(rows[0]?.n ?? 0)),
        Effect.mapError(failWith("purge", "*"))
      )
    }
    return store
  })

/**
 * Provides the SQL store as the `IdempotencyStore` (migrations included) and purges expired rows in the
 * background for the layer's lifetime. Needs a `SqlClient` (e.g. `Database.layerConfig()` from `@bulwark/sql`).
 */
export const layer = (options: Options = {}): Layer.Layer<
  Store.IdempotencyStore,
  SqlError | InvalidTableNameError,
  SqlClient.SqlClient
> =>
  Layer.scoped(
    Store.IdempotencyStore,
    Effect.gen(function*() {
      const store = yield* make(options)
      yield* store.purgeExpired.pipe(
        Effect.catchAll((error) => Effect.logWarning("idempotency purge failed; retrying next interval", error)),
        Effect.repeat(Schedule.spaced(options.purgeInterval ?? "1 minute")),
        Effect.delay(options.purgeInterval ?? "1 minute"),
        Effect.forkScoped
      )
      return store
    })
  )
