import * as SqlClient from "@effect/sql/SqlClient"
import { Database } from "@bulwark/sql"
import { Effect, Layer } from "effect"
import { afterAll } from "vitest"
import * as Sql from "../src/DeadLetterStore/Sql.js"
import { suite } from "./contract.js"

const postgresUrl = process.env.BULWARK_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const table = `bulwark_dlq_test_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`

suite("pglite", Sql.layer({ table }).pipe(Layer.provide(Database.layerPglite())))
suite("postgres", Sql.layer({ table }).pipe(Layer.provide(Database.layerPostgres({ url: postgresUrl }))))

afterAll(() =>
  Effect.runPromise(
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`DROP TABLE IF EXISTS ${sql(table)}`
      yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`dead-letter:${table}`}`
    }).pipe(Effect.provide(Database.layerPostgres({ url: postgresUrl })))
  ), 30_000)
