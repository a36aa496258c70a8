/**
 * The example's table names, all under one prefix, so runs against a shared PostgreSQL never meet each
 * other's rows and a run can remove everything it created.
 */
import * as SqlAuditLog from "@bulwark/audit/AuditLog/Sql"
import * as SqlDeadLetterStore from "@bulwark/dead-letter/DeadLetterStore/Sql"
import { Outbox } from "@bulwark/outbox"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Data, Effect } from "effect"

/** Every table (and the sequence) the example uses. */
export interface Tables {
  readonly prefix: string
  readonly orders: string
  readonly orderSequence: string
  readonly outbox: string
  readonly idempotency: string
  readonly deadLetters: string
  readonly audit: string
  readonly pollCursors: string
}

/** A prefix that is not a plain lower-case SQL identifier. */
export class InvalidPrefix extends Data.TaggedError("InvalidPrefix")<{ readonly prefix: string }> {
  override get message(): string {
    return `table prefix "${this.prefix}" must be 1-30 of a-z, 0-9 and _, starting with a letter`
  }
}

/** The tables under `prefix`. */
export const tablesFor = (prefix: string): Effect.Effect<Tables, InvalidPrefix> =>
  /^[a-z][a-z0-9_]{0,29}$/.test(prefix)
    ? Effect.succeed({
      prefix,
      orders: `${prefix}_orders`,
      orderSequence: `${prefix}_orders_paid_seq`,
      outbox: `${prefix}_outbox`,
      idempotency: `${prefix}_idempotency`,
      deadLetters: `${prefix}_dead_letters`,
      audit: `${prefix}_audit`,
      pollCursors: `${prefix}_poll_cursors`
    })
    : Effect.fail(new InvalidPrefix({ prefix }))

/**
 * Drops the tables and forgets their migrations. The migration records must go too: a later run reusing
 * a name would otherwise believe its table exists.
 */
export const drop = (tables: Tables): Effect.Effect<void, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const owned = [
      ["payments", tables.orders],
      ["idempotency", tables.idempotency],
      ["poll", tables.pollCursors]
    ] as const
    for (const [component, table] of owned) {
      yield* sql.unsafe(`DROP TABLE IF EXISTS ${table}`)
      yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`${component}:${table}`}`
    }
    // The outbox (its sleeping relays) and the dead-letter store (its replay pace) own second tables; each
    // knows how to drop itself.
    yield* Outbox.drop(tables.outbox).pipe(Effect.catchTag("InvalidTableName", Effect.die))
    yield* SqlDeadLetterStore.drop(tables.deadLetters).pipe(Effect.catchTag("InvalidTableName", Effect.die))
    yield* SqlAuditLog.drop(tables.audit).pipe(Effect.catchTag("InvalidTableName", Effect.die))
    yield* sql.unsafe(`DROP SEQUENCE IF EXISTS ${tables.orderSequence}`)
  })
