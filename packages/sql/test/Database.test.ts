import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, layer } from "@effect/vitest"
import { Chunk, Effect, Fiber, Layer, Stream } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Database from "../src/Database.js"
import * as Migrations from "../src/Migrations.js"

const postgresUrl = process.env.BULWARK_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"

const engines: ReadonlyArray<[string, Layer.Layer<SqlClient.SqlClient | Database.Database, unknown>]> = [
  ["pglite", Database.layerPglite()],
  ["postgres", Database.layerPostgres({ url: postgresUrl })]
]

for (const [name, database] of engines) {
  layer(database, { excludeTestServices: true, timeout: "30 seconds" })(`Database on ${name}`, (it) => {
    const table = `bulwark_sql_test_${name}_${Date.now().toString(36)}`

    it.effect("runs migrations once, even when asked twice at the same time", () =>
      Effect.gen(function*() {
        const component = `test-${table}`
        const migrations = [
          { id: 1, name: "create", statements: [`CREATE TABLE ${table} (id bigint PRIMARY KEY, note text)`] },
          { id: 2, name: "column", statements: [`ALTER TABLE ${table} ADD COLUMN at timestamptz`] }
        ]
        const [a, b] = yield* Effect.all([Migrations.run(component, migrations), Migrations.run(component, migrations)], {
          concurrency: 2
        })
        expect([...a, ...b].sort()).toEqual([1, 2])
        expect(yield* Migrations.run(component, migrations)).toEqual([])
      }))

    it.effect("reads int8 as number and rolls a failed transaction back", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO ${sql(table)} (id, note) VALUES (${9_000_000_000}, 'kept')`
        const failed = yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql`INSERT INTO ${sql(table)} (id, note) VALUES (1, 'rolled back')`
          return yield* Effect.fail("abort" as const)
        })).pipe(Effect.flip)
        expect(failed).toBe("abort")
        const rows = yield* sql<{ id: number; note: string }>`SELECT id, note FROM ${sql(table)} ORDER BY id`
        expect(rows).toEqual([{ id: 9_000_000_000, note: "kept" }])
      }))

    it.effect("concurrent transactions do not see each other's uncommitted rows", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const tx = (id: number) =>
          sql.withTransaction(Effect.gen(function*() {
            yield* sql`INSERT INTO ${sql(table)} (id, note) VALUES (${id}, 'tx')`
            yield* Effect.sleep("20 millis")
            const [row] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)} WHERE note = 'tx'`
            return row!.n
          }))
        const seen = yield* Effect.all([tx(10), tx(11), tx(12)], { concurrency: 3 })
        expect(seen.every((n) => n >= 1 && n <= 3)).toBe(true)
        const [total] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)} WHERE note = 'tx'`
        expect(total!.n).toBe(3)
      }))

    it.effect("LISTEN receives NOTIFY, and a notification sent in a transaction arrives only at commit", () =>
      Effect.gen(function*() {
        const db = yield* Database.Database
        const sql = yield* SqlClient.SqlClient
        const channel = `${table}_ch`
        const received = yield* db.listen(channel).pipe(Stream.take(2), Stream.runCollect, Effect.fork)
        yield* Effect.sleep("200 millis")
        yield* db.notify(channel, "one")
        yield* sql.withTransaction(db.notify(channel, "two"))
        const payloads = yield* Fiber.join(received).pipe(Effect.timeout("10 seconds"))
        expect(Chunk.toReadonlyArray(payloads)).toEqual(["one", "two"])
        yield* sql`DROP TABLE ${sql(table)}`
        yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`test-${table}`}`
      }))
  })
}

describe("Database configuration", () => {
  layer(Layer.empty)((it) => {
    it.effect("rejects a URL that is not postgres:// with a typed error", () =>
      Effect.gen(function*() {
        const error = yield* Database.parseUrl("mysql://root@localhost/test").pipe(Effect.flip)
        expect(error._tag).toBe("DatabaseUrlError")
        expect(error.message).toContain("expected postgres://")
        const garbage = yield* Database.parseUrl("not a url").pipe(Effect.flip)
        expect(garbage.reason).toBe("not a URL")
      }))

    it.effect("an embedded database keeps its data in its directory across restarts", () =>
      Effect.gen(function*() {
        const dir = mkdtempSync(join(tmpdir(), "bulwark-pglite-"))
        const write = Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          yield* sql`CREATE TABLE kept (v text)`
          yield* sql`INSERT INTO kept VALUES ('survives')`
        }).pipe(Effect.provide(Database.layerPglite({ dataDir: dir })))
        const read = Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          return yield* sql<{ v: string }>`SELECT v FROM kept`
        }).pipe(Effect.provide(Database.layerPglite({ dataDir: dir })))
        yield* write
        expect(yield* read).toEqual([{ v: "survives" }])
        rmSync(dir, { recursive: true, force: true })
      }), 60_000)
  })
})
