/**
 * The SQL checkpoint store (PostgreSQL, or the embedded PGlite): one row per (stream, group, shard). A claim is
 * one atomic `INSERT … ON CONFLICT … DO UPDATE … WHERE the lease is free, expired or ours … RETURNING`, so two
 * processes racing for a shard get one winner; every later write names the owner, so a process whose lease was
 * taken over cannot move the checkpoint back. Lease time is the database server's clock.
 */
import * as Migrations from "@bulwark/sql/Migrations"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Duration, Effect, Layer } from "effect"
import { CheckpointStore, CheckpointStoreError, type Lease, type Service } from "../CheckpointStore.js"

/** Settings of the SQL store. */
export interface Options {
  /** The table name. Default `bulwark_kinesis_checkpoints`. */
  readonly table?: string
}

/** The default table name. */
export const defaultTable = "bulwark_kinesis_checkpoints"

/** A table name that is not a plain SQL identifier. */
export const InvalidTableNameError = Migrations.InvalidTableName
/** A table name that is not a plain SQL identifier. */
export type InvalidTableNameError = Migrations.InvalidTableName

/** The migrations of one checkpoint table. */
export const migrations = (table: string): ReadonlyArray<Migrations.Migration> => [{
  id: 1,
  name: "create kinesis checkpoint table",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${table} (
      stream text NOT NULL,
      grp text NOT NULL,
      shard text NOT NULL,
      owner text,
      lease_until bigint NOT NULL,
      checkpoint text,
      delivered text,
      retries integer NOT NULL,
      ended boolean NOT NULL,
      PRIMARY KEY (stream, grp, shard)
    )`
  ]
}, {
  id: 2,
  name: "create kinesis group members table",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${table}_members (
      stream text NOT NULL,
      grp text NOT NULL,
      owner text NOT NULL,
      alive_until bigint NOT NULL,
      PRIMARY KEY (stream, grp, owner)
    )`
  ]
}]

const nowMs = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

interface LeaseRow {
  readonly checkpoint: string | null
  readonly delivered: string | null
  readonly retries: number
  readonly ended: boolean
}

/** Creates the store over the `SqlClient` in context, running its migrations first. */
export const make = (options: Options = {}): Effect.Effect<Service, SqlError | InvalidTableNameError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const table = yield* Migrations.tableName(options.table ?? defaultTable)
    const sql = yield* SqlClient.SqlClient
    yield* Migrations.run(`kinesis-checkpoints:${table}`, migrations(table))
    const t = sql(table)
    const m = sql(`${table}_members`)
    const now = sql.literal(nowMs)
    const fail = (operation: CheckpointStoreError["operation"]) => (cause: unknown) => new CheckpointStoreError({ operation, cause })
    const some = (rows: ReadonlyArray<unknown>) => rows.length > 0

    return {
      persistent: true,
      claim: (key, owner, lease) =>
        sql<LeaseRow>`
          INSERT INTO ${t} AS cur (stream, grp, shard, owner, lease_until, checkpoint, delivered, retries, ended)
          VALUES (${key.stream}, ${key.group}, ${key.shard}, ${owner}, ${now} + ${Duration.toMillis(lease)}, NULL, NULL, 0, false)
          ON CONFLICT (stream, grp, shard) DO UPDATE SET
            owner = EXCLUDED.owner,
            lease_until = EXCLUDED.lease_until,
            retries = CASE
              WHEN cur.owner IS DISTINCT FROM EXCLUDED.owner AND cur.delivered IS NOT NULL
                AND cur.delivered IS DISTINCT FROM cur.checkpoint THEN cur.retries + 1
              ELSE cur.retries END
          WHERE cur.owner IS NULL OR cur.owner = EXCLUDED.owner OR cur.lease_until <= ${now}
          RETURNING checkpoint, delivered, retries, ended`.pipe(
          Effect.map((rows): Lease | undefined => {
            const row = rows[0]
            return row === undefined ? undefined : {
              checkpoint: row.checkpoint ?? undefined,
              delivered: row.delivered ?? undefined,
              retries: Number(row.retries),
              ended: Boolean(row.ended)
            }
          }),
          Effect.mapError(fail("claim"))
        ),
      renew: (key, owner, lease) =>
        sql`
          UPDATE ${t} SET lease_until = ${now} + ${Duration.toMillis(lease)}
          WHERE stream = ${key.stream} AND grp = ${key.group} AND shard = ${key.shard} AND owner = ${owner} AND lease_until > ${now}
          RETURNING shard`.pipe(Effect.map(some), Effect.mapError(fail("renew"))),
      checkpoint: (key, owner, position) =>
        sql`
          UPDATE ${t} SET checkpoint = ${position.sequence}, ended = ${position.ended},
            retries = CASE WHEN ${position.caughtUp} THEN 0 ELSE retries END
          WHERE stream = ${key.stream} AND grp = ${key.group} AND shard = ${key.shard} AND owner = ${owner} AND lease_until > ${now}
          RETURNING shard`.pipe(Effect.map(some), Effect.mapError(fail("checkpoint"))),
      delivered: (key, owner, sequence) =>
        sql`
          UPDATE ${t} SET delivered = ${sequence}
          WHERE stream = ${key.stream} AND grp = ${key.group} AND shard = ${key.shard} AND owner = ${owner} AND lease_until > ${now}
          RETURNING shard`.pipe(Effect.map(some), Effect.mapError(fail("delivered"))),
      release: (key, owner) =>
        sql`
          UPDATE ${t} SET owner = NULL, lease_until = 0
          WHERE stream = ${key.stream} AND grp = ${key.group} AND shard = ${key.shard} AND owner = ${owner}`.pipe(
          Effect.asVoid,
          Effect.mapError(fail("release"))
        ),
      ended: (key) =>
        sql<{ ended: boolean }>`
          SELECT ended FROM ${t} WHERE stream = ${key.stream} AND grp = ${key.group} AND shard = ${key.shard}`.pipe(
          Effect.map((rows) => Boolean(rows[0]?.ended ?? false)),
          Effect.mapError(fail("ended"))
        ),
      announce: (group, owner, ttl) =>
        Effect.gen(function*() {
          yield* sql`
            INSERT INTO ${m} (stream, grp, owner, alive_until)
            VALUES (${group.stream}, ${group.group}, ${owner}, ${now} + ${Duration.toMillis(ttl)})
            ON CONFLICT (stream, grp, owner) DO UPDATE SET alive_until = EXCLUDED.alive_until`
          // Readers that died long ago (each process has an owner of its own) leave no rows behind.
          yield* sql`
            DELETE FROM ${m} WHERE stream = ${group.stream} AND grp = ${group.group}
              AND alive_until < ${now} - ${10 * Duration.toMillis(ttl)}`
          const rows = yield* sql<{ alive: number }>`
            SELECT count(*)::int AS alive FROM ${m}
            WHERE stream = ${group.stream} AND grp = ${group.group} AND alive_until > ${now}`
          return Math.max(1, Number(rows[0]?.alive ?? 1))
        }).pipe(Effect.mapError(fail("announce"))),
      leave: (group, owner) =>
        sql`DELETE FROM ${m} WHERE stream = ${group.stream} AND grp = ${group.group} AND owner = ${owner}`.pipe(
          Effect.asVoid,
          Effect.mapError(fail("leave"))
        )
    } satisfies Service
  })

/** Provides the SQL store as the `CheckpointStore` (migrations included). Needs a `SqlClient` (`@bulwark/sql`'s `Database`). */
export const layer = (options: Options = {}): Layer.Layer<CheckpointStore, SqlError | InvalidTableNameError, SqlClient.SqlClient> =>
  Layer.effect(CheckpointStore, make(options))
