/**
 * The SQL cursor store (PGlite and PostgreSQL): one row per source holding its cursor and its lease.
 * `transaction` is the database's `sql.withTransaction`, the one `Outbox.append` joins, so a page's outbox
 * rows and its cursor commit together. `save` locks the source's row and checks the holder in the same
 * statement, so a lease taken over mid-transaction fails the commit rather than racing it.
 */
import { Migrations } from "@bulwark/sql"
import type { Database } from "@bulwark/sql"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { Effect, Layer, Option } from "effect"
import { CursorStore, CursorStoreError, LeaseLost, type Service } from "../CursorStore.js"

/** Settings of the SQL cursor store. */
export interface Options {
  /** The table. Default `bulwark_poll_cursors`. */
  readonly table?: string
}

/** The default table. */
export const defaultTable = "bulwark_poll_cursors"

const migrations = (table: string): ReadonlyArray<Migrations.Migration> => [{
  id: 1,
  name: "poll cursors",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${table} (
      source text PRIMARY KEY,
      cursor text,
      holder text,
      lease_until timestamptz,
      updated_at timestamptz NOT NULL DEFAULT now()
    )`
  ]
}]

/** Creates the table (migrations) and the store over the database in context. */
export const make = (
  options: Options = {}
): Effect.Effect<Service, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient | Database.Database> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const table = yield* Migrations.tableName(options.table ?? defaultTable)
    yield* Migrations.run(`poll:${table}`, migrations(table))
    const failed = (operation: string) => (cause: SqlError) => new CursorStoreError({ operation, cause })
    const t = sql(table)

    const load = (source: string) =>
      sql<{ cursor: string | null }>`SELECT cursor FROM ${t} WHERE source = ${source}`.pipe(
        Effect.map((rows) => Option.fromNullable(rows[0]?.cursor)),
        Effect.mapError(failed("load"))
      )

    // Taken when free, already ours, or expired; the row lock of the upsert makes two takers agree.
    const acquire = (source: string, holder: string, leaseMillis: number) =>
      sql<{ holder: string }>`
        INSERT INTO ${t} (source, holder, lease_until)
        VALUES (${source}, ${holder}, now() + ${leaseMillis} * interval '1 millisecond')
        ON CONFLICT (source) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until
        WHERE ${t}.holder IS NULL OR ${t}.holder = excluded.holder OR ${t}.lease_until < now()
        RETURNING holder`.pipe(
        Effect.map((rows) => rows.length === 1),
        Effect.mapError(failed("acquire"))
      )

    const renew = (source: string, holder: string, leaseMillis: number) =>
      sql`UPDATE ${t} SET lease_until = now() + ${leaseMillis} * interval '1 millisecond'
          WHERE source = ${source} AND holder = ${holder} RETURNING source`.pipe(
        Effect.map((rows) => rows.length === 1),
        Effect.mapError(failed("renew"))
      )

    const release = (source: string, holder: string) =>
      sql`UPDATE ${t} SET holder = NULL, lease_until = NULL WHERE source = ${source} AND holder = ${holder}`.pipe(
        Effect.asVoid,
        Effect.mapError(failed("release"))
      )

    // Still ours even past the lease when nobody took it over: nothing else can have written the source.
    const save = (source: string, holder: string, cursor: string | undefined) =>
      sql`UPDATE ${t} SET cursor = ${cursor ?? null}, updated_at = now() WHERE source = ${source} AND holder = ${holder} RETURNING source`.pipe(
        Effect.mapError(failed("save")),
        Effect.flatMap((rows) => rows.length === 1 ? Effect.void : Effect.fail(new LeaseLost({ source, holder })))
      )

    const transaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | CursorStoreError, R> =>
      sql.withTransaction(effect).pipe(
        Effect.catchIf(
          (error): error is SqlError => error instanceof SqlError,
          (cause) => Effect.fail(new CursorStoreError({ operation: "transaction", cause }))
        )
      ) as Effect.Effect<A, E | CursorStoreError, R>

    return { name: table, load, acquire, renew, release, save, transaction }
  })

/** Provides the {@link CursorStore} over the database in context, creating its table. */
export const layer = (
  options: Options = {}
): Layer.Layer<CursorStore, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient | Database.Database> =>
  Layer.effect(CursorStore, make(options))
