/**
 * Schema migrations for Bulwark's own tables. Each component (outbox, idempotency, dead-letter, …) owns an
 * ordered list; `run` applies the missing ones in one transaction under an advisory lock, so several
 * processes starting at once migrate exactly once.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Data, Effect, Schedule } from "effect"
import { isConnectionLoss, transactional } from "./Transaction.js"

/** One migration step. `id`s increase; a step never changes once released. */
export interface Migration {
  readonly id: number
  readonly name: string
  /** SQL statements, run one by one. */
  readonly statements: ReadonlyArray<string>
}

// A server that goes away while a process starts (a restart, a failover) is waited for, within a bound, instead
// of failing the layer that migrates: migrations are idempotent (recorded in one transaction), so a retry of one
// whose COMMIT was lost finds it applied.
const whileUnreachable = Schedule.exponential("100 millis").pipe(
  Schedule.either(Schedule.spaced("5 seconds")),
  Schedule.jittered,
  Schedule.upTo("30 seconds")
)

/**
 * Applies the component's migrations that are not yet recorded; answers the ids it applied. A lost connection
 * is retried for up to 30 s (jittered backoff) before it fails.
 */
export const run = (
  component: string,
  migrations: ReadonlyArray<Migration>
): Effect.Effect<ReadonlyArray<number>, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE IF NOT EXISTS bulwark_migrations (
      component text NOT NULL,
      id integer NOT NULL,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (component, id)
    )`.pipe(
      // Two processes racing to create the table: the loser's error is harmless, the table exists.
      Effect.catchAll(() => Effect.void)
    )
    return yield* transactional(sql.withTransaction)(Effect.gen(function*() {
      yield* sql`SELECT pg_advisory_xact_lock(hashtext(${"bulwark_migrations:" + component}))`
      const rows = yield* sql<{ id: number }>`SELECT id FROM bulwark_migrations WHERE component = ${component}`
      const applied = new Set(rows.map((row) => Number(row.id)))
      const done: Array<number> = []
      for (const migration of [...migrations].sort((a, b) => a.id - b.id)) {
        if (applied.has(migration.id)) continue
        for (const statement of migration.statements) yield* sql.unsafe(statement)
        yield* sql`INSERT INTO bulwark_migrations (component, id, name) VALUES (${component}, ${migration.id}, ${migration.name})`
        done.push(migration.id)
      }
      return done
    }))
  }).pipe(Effect.retry({ schedule: whileUnreachable, while: isConnectionLoss }))

/** A table name that is not a plain lower-case SQL identifier (it is interpolated into DDL, so it is checked). */
export class InvalidTableName extends Data.TaggedError("InvalidTableName")<{ readonly table: string }> {
  override get message(): string {
    return `table name ${JSON.stringify(this.table)} must match /^[a-z_][a-z0-9_]{0,50}$/ (lower-case letters, digits, _)`
  }
}

/** Succeeds with `table` when it is a plain lower-case SQL identifier of at most 51 characters. */
export const tableName = (table: string): Effect.Effect<string, InvalidTableName> =>
  /^[a-z_][a-z0-9_]{0,50}$/.test(table) ? Effect.succeed(table) : Effect.fail(new InvalidTableName({ table }))
