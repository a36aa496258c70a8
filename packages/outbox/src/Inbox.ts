/**
 * The transactional inbox, the outbox's consumer-side twin: `process` records `(consumer, messageId)` in the
 * same transaction as the consumer's own state change. If the change committed, the id is recorded and a
 * redelivery is skipped; if the process died before the commit, neither exists and the redelivery runs it
 * again. Exactly-once effect on the consumer's own database, over an at-least-once transport.
 */
import * as Migrations from "@bulwark/sql/Migrations"
import * as Transaction from "@bulwark/sql/Transaction"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Context, Duration, Effect, Layer, Option } from "effect"
import * as tables from "./internal/tables.js"

/** Settings of the inbox table. */
export interface Options {
  /** The inbox table. Default `bulwark_inbox`. */
  readonly table?: string
}

/** The default inbox table. */
export const defaultTable = "bulwark_inbox"

/** The inbox over one table. */
export class Inbox extends Context.Tag("@bulwark/outbox/Inbox")<Inbox, {
  readonly table: string
}>() {}

/** Creates the inbox table (migrations). */
export const make = (options: Options = {}): Effect.Effect<Context.Tag.Service<Inbox>, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const table = yield* Migrations.tableName(options.table ?? defaultTable)
    yield* Migrations.run(`inbox:${table}`, tables.inboxMigrations(table))
    return { table }
  })

/** Provides the {@link Inbox}, creating its table. */
export const layer = (options: Options = {}): Layer.Layer<Inbox, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient> =>
  Layer.effect(Inbox, make(options))

/**
 * Runs `effect` in a transaction that also records `messageId` as processed by `consumer`; answers
 * `Option.some(result)`, or `Option.none()` without running `effect` when the id was already recorded.
 * A failure or interruption of `effect` rolls both back. A concurrent duplicate waits for the first and is skipped.
 */
export const process = <A, E, R>(
  messageId: string,
  consumer: string,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<Option.Option<A>, E | SqlError, R | Inbox | SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const { table } = yield* Inbox
    return yield* Transaction.transactional(sql.withTransaction)(Effect.gen(function*() {
      const inserted = yield* sql`INSERT INTO ${sql(table)} (consumer, message_id) VALUES (${consumer}, ${messageId})
        ON CONFLICT DO NOTHING RETURNING message_id`
      if (inserted.length === 0) return Option.none<A>()
      return Option.some(yield* effect)
    }))
  })

/** Whether `consumer` has processed `messageId`. */
export const isProcessed = (messageId: string, consumer: string): Effect.Effect<boolean, SqlError, Inbox | SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const { table } = yield* Inbox
    const rows = yield* sql`SELECT 1 FROM ${sql(table)} WHERE consumer = ${consumer} AND message_id = ${messageId}`
    return rows.length > 0
  })

/** Forgets processed ids older than `olderThan` (keep it longer than any redelivery can arrive); answers how many. */
export const purge = (olderThan: Duration.DurationInput): Effect.Effect<number, SqlError, Inbox | SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const { table } = yield* Inbox
    const millis = Duration.toMillis(Duration.decode(olderThan))
    const rows = yield* sql`DELETE FROM ${sql(table)} WHERE processed_at < now() - (${millis}::float8 * interval '1 millisecond') RETURNING 1`
    return rows.length
  })
