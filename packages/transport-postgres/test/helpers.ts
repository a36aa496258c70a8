import type * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer } from "effect"
import * as PostgresTransport from "../src/PostgresTransport.js"

export const postgresUrl = process.env["BULWARK_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"

/** A table name no other test run shares. */
export const uniqueTable = (label: string) =>
  `bulwark_tq_${label}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6).toString(36)}`

/** Drops the table when the layer closes (before the database layer below it). */
export const dropOnClose = (table: string): Layer.Layer<never, never, SqlClient.SqlClient> =>
  Layer.scopedDiscard(Effect.addFinalizer(() => PostgresTransport.drop(table).pipe(Effect.orDie)))
