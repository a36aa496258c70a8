import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, layer } from "@effect/vitest"
import { Cause, Chunk, Deferred, Effect, Exit, Fiber, Layer, Option, Schedule, Scope, Stream, Tracer } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Database from "../src/Database.js"
import * as Migrations from "../src/Migrations.js"
import * as Transaction from "../src/Transaction.js"

const postgresUrl = process.env.BULWARK_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"

const engines: ReadonlyArray<[string, Layer.Layer<SqlClient.SqlClient | Database.Database, unknown>]> = [
  ["pglite", Database.layerPglite()],
  ["postgres", Database.layerPostgres({ url: postgresUrl })]
]

// The current transaction's id if it has written anything: null outside a transaction (each statement its own).
const openTransactionId = (sql: SqlClient.SqlClient) =>
  Effect.map(sql<{ x: string | null }>`SELECT pg_current_xact_id_if_assigned()::text AS x`, (rows) => rows[0]!.x)

// The slow-COMMIT table and its trigger function go when the test ends, passed or not.
const dropLater = (sql: SqlClient.SqlClient, slow: string) =>
  Effect.addFinalizer(() =>
    Effect.zipRight(sql.unsafe(`DROP TABLE IF EXISTS ${slow}`), sql.unsafe(`DROP FUNCTION IF EXISTS ${slow}_f()`)).pipe(Effect.orDie)
  )

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

    it.effect("a savepoint inside a transaction rolls back alone; an interrupted transaction leaves nothing", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const inner = yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql`INSERT INTO ${sql(table)} (id, note) VALUES (20, 'outer')`
          const nested = yield* sql.withTransaction(Effect.zipRight(
            sql`INSERT INTO ${sql(table)} (id, note) VALUES (21, 'savepoint')`,
            Effect.fail("inner" as const)
          )).pipe(Effect.flip)
          yield* sql.withTransaction(sql`INSERT INTO ${sql(table)} (id, note) VALUES (22, 'savepoint kept')`)
          return nested
        }))
        expect(inner).toBe("inner")
        const started = yield* Deferred.make<void>()
        const hanging = yield* sql.withTransaction(Effect.zipRight(
          sql`INSERT INTO ${sql(table)} (id, note) VALUES (23, 'interrupted')`,
          Effect.zipRight(Deferred.succeed(started, undefined), Effect.never)
        )).pipe(Effect.fork)
        yield* Deferred.await(started)
        yield* Fiber.interrupt(hanging)
        const rows = yield* sql<{ id: number }>`SELECT id FROM ${sql(table)} WHERE id BETWEEN 20 AND 23 ORDER BY id`
        expect(rows.map((r) => r.id)).toEqual([20, 22])
        // The connection went back outside any transaction (the pool hands out the last one released; PGlite
        // has only the one): a left-open transaction would show the interrupted INSERT's transaction id here.
        expect(yield* openTransactionId(sql)).toBeNull()
        expect(yield* sql.withTransaction(sql<{ n: number }>`SELECT 1 AS n`)).toEqual([{ n: 1 }])
      }))

    it.effect("an interruption that arrives while COMMIT runs waits for it: the transaction commits, and its connection goes back outside any transaction", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const slow = `${table}_slow_commit`
        yield* dropLater(sql, slow)
        // A deferred constraint trigger runs at COMMIT: this one makes every COMMIT that wrote a row take a second.
        yield* sql.unsafe(`CREATE TABLE ${slow} (id int PRIMARY KEY)`)
        yield* sql.unsafe(`CREATE FUNCTION ${slow}_f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$`)
        yield* sql.unsafe(
          `CREATE CONSTRAINT TRIGGER ${slow}_t AFTER INSERT ON ${slow} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${slow}_f()`
        )
        const bodyDone = yield* Deferred.make<void>()
        const committing = yield* sql.withTransaction(Effect.zipRight(
          sql`INSERT INTO ${sql(slow)} (id) VALUES (1)`,
          Deferred.succeed(bodyDone, undefined)
        )).pipe(Effect.fork)
        yield* Deferred.await(bodyDone)
        yield* Effect.sleep("50 millis")
        const exit = yield* Fiber.interrupt(committing)
        if (name === "postgres") {
          // The COMMIT was on the wire when the interruption came; the fiber ends interrupted only once it is answered.
          expect(Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)).toBe(true)
        } else {
          // PGlite runs a statement on this thread: the COMMIT ended before the interruption could be asked for.
          expect(Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)).toBe(true)
        }
        expect(yield* sql<{ id: number }>`SELECT id FROM ${sql(slow)}`).toEqual([{ id: 1 }])
        expect(yield* openTransactionId(sql)).toBeNull()
      }).pipe(Effect.scoped))

    it.effect("a transaction's body sees its connection and not the reservation's scope; the caller's context is back after any exit", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const outerScope = Option.getOrUndefined(yield* Effect.serviceOption(Scope.Scope))
        const [connection, scope] = yield* sql.withTransaction(
          Effect.all([Effect.serviceOption(SqlClient.TransactionConnection), Effect.serviceOption(Scope.Scope)])
        )
        expect(Option.isSome(connection)).toBe(true)
        expect(Option.getOrUndefined(scope)).toBe(outerScope)
        const exits = [
          yield* Effect.exit(sql.withTransaction(sql`SELECT 1`)),
          yield* Effect.exit(sql.withTransaction(Effect.fail("refused"))),
          yield* Effect.exit(sql.withTransaction(Effect.die("broken"))),
          yield* Effect.exit(sql.withTransaction(Effect.interrupt))
        ]
        expect(exits.map((exit) => exit._tag)).toEqual(["Success", "Failure", "Failure", "Failure"])
        // Outside the transaction again: no connection in context, the caller's scope (if any), and a statement
        // runs on its own (each connection went back outside any transaction).
        expect(Option.isNone(yield* Effect.serviceOption(SqlClient.TransactionConnection))).toBe(true)
        expect(Option.getOrUndefined(yield* Effect.serviceOption(Scope.Scope))).toBe(outerScope)
        expect(yield* openTransactionId(sql)).toBeNull()
      }))

    it.effect("with a tracer installed a transaction keeps its sql.transaction span; with none it runs without one", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const names: Array<string> = []
        const native = yield* Effect.tracer
        const recording = Tracer.make({
          span: (name, parent, context, links, startTime, kind, options) => {
            names.push(name)
            return native.span(name, parent, context, links, startTime, kind, options)
          },
          context: native.context
        })
        yield* sql.withTransaction(sql`SELECT 1`).pipe(Effect.withTracer(recording))
        expect(names).toContain("sql.transaction")
        // Without one (spans go nowhere), the body runs under the caller's span, not under a transaction span.
        expect((yield* sql.withTransaction(Effect.option(Effect.currentParentSpan)))._tag).toBe("None")
        const outer = yield* sql.withTransaction(Effect.currentParentSpan).pipe(Effect.withSpan("outer"))
        expect(outer._tag === "Span" && outer.name).toBe("outer")
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

    it.scoped("listeners of one channel: one that stops leaves the others listening", () =>
      Effect.gen(function*() {
        const db = yield* Database.Database
        const channel = `${table}_shared`
        const leaving = yield* db.listen(channel).pipe(Stream.runDrain, Effect.fork)
        const staying = yield* db.listen(channel).pipe(Stream.take(2), Stream.runCollect, Effect.fork)
        yield* Effect.sleep("300 millis")
        yield* db.notify(channel, "before")
        yield* Effect.sleep("100 millis")
        yield* Fiber.interrupt(leaving)
        yield* db.notify(channel, "after")
        const heard = yield* Fiber.join(staying).pipe(Effect.timeout("5 seconds"))
        expect(Chunk.toReadonlyArray(heard)).toEqual(["before", "after"])
      }))

    it.scoped("listeners started at once share the connection one statement at a time, and each hears its channel", () =>
      Effect.gen(function*() {
        const db = yield* Database.Database
        // node-postgres warns (once per process) when a statement is sent while another runs on the client.
        const warnings: Array<string> = []
        const onWarning = (warning: Error) => warnings.push(warning.message)
        process.on("warning", onWarning)
        yield* Effect.addFinalizer(() => Effect.sync(() => process.off("warning", onWarning)))
        const channels = Array.from({ length: 6 }, (_, i) => `${table}_many_${i}`)
        const fibers = yield* Effect.forEach(channels, (channel) =>
          db.listen(channel).pipe(Stream.take(1), Stream.runCollect, Effect.fork))
        yield* Effect.sleep("300 millis")
        yield* Effect.forEach(channels, (channel) => db.notify(channel, channel))
        const heard = yield* Effect.forEach(fibers, Fiber.join).pipe(Effect.timeout("10 seconds"))
        expect(heard.map((payloads) => Chunk.toReadonlyArray(payloads))).toEqual(channels.map((channel) => [channel]))
        yield* Effect.sleep("50 millis")
        expect(warnings.filter((message) => message.includes("already executing"))).toEqual([])
      }))
  })
}

// One connection, so that every statement after a transaction shows what that transaction left on it.
layer(Database.layerPostgres({ url: postgresUrl, maxConnections: 1, queryTimeout: "500 millis" }), {
  excludeTestServices: true,
  timeout: "30 seconds"
})("a statement past the query timeout in a transaction on PostgreSQL", (it) => {
  const pid = (sql: SqlClient.SqlClient) => Effect.map(sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`, (rows) => rows[0]!.pid)

  it.effect("a statement past the query timeout inside a transaction closes its connection: ConnectionLost, and the next one is new and outside any transaction", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const before = yield* pid(sql)
      const error = yield* sql.withTransaction(Effect.zipRight(sql`SELECT txid_current()`, sql`SELECT pg_sleep(2)`)).pipe(Effect.flip)
      expect(error).toBeInstanceOf(Transaction.ConnectionLost)
      expect(yield* pid(sql)).not.toBe(before)
      expect(yield* openTransactionId(sql)).toBeNull()
    }))

  it.effect("a COMMIT past the query timeout is CommitUnknown and closes its connection", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const slow = `bulwark_sql_test_commit_timeout_${Date.now().toString(36)}`
      yield* dropLater(sql, slow)
      yield* sql.unsafe(`CREATE TABLE ${slow} (id int PRIMARY KEY)`)
      yield* sql.unsafe(`CREATE FUNCTION ${slow}_f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$`)
      yield* sql.unsafe(
        `CREATE CONSTRAINT TRIGGER ${slow}_t AFTER INSERT ON ${slow} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${slow}_f()`
      )
      const before = yield* pid(sql)
      const error = yield* sql.withTransaction(sql`INSERT INTO ${sql(slow)} (id) VALUES (1)`).pipe(Effect.flip)
      expect(error).toBeInstanceOf(Transaction.CommitUnknown)
      expect(yield* pid(sql)).not.toBe(before)
      expect(yield* openTransactionId(sql)).toBeNull()
      // The server ends the abandoned session once its COMMIT is done, which here committed: "may or may not".
      yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${before}`.pipe(
        Effect.filterOrFail((rows) => rows[0]!.n === 0),
        Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("10 seconds")))
      )
      expect(yield* sql<{ id: number }>`SELECT id FROM ${sql(slow)}`).toEqual([{ id: 1 }])
    }).pipe(Effect.scoped))
})

layer(Database.layerPostgres({ url: postgresUrl, maxConnections: 2 }), {
  excludeTestServices: true,
  timeout: "30 seconds"
})("a transaction interrupted on PostgreSQL", (it) => {
  it.effect("interrupted during a statement: the statement is cancelled, and the connection goes back outside any transaction", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const started = yield* Deferred.make<void>()
      const running = yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`SELECT txid_current()`
        yield* Deferred.succeed(started, undefined)
        yield* sql`SELECT pg_sleep(20)`
      })).pipe(Effect.fork)
      yield* Deferred.await(started)
      const exit = yield* Fiber.interrupt(running).pipe(Effect.timeout("10 seconds"))
      expect(Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)).toBe(true)
      // Both connections at once (the cancellation ran on the other one), each outside any transaction.
      const held = sql.withTransaction(Effect.zipLeft(openTransactionId(sql), Effect.sleep("100 millis")))
      expect(yield* Effect.all([held, held], { concurrency: 2 })).toEqual([null, null])
    }))
})

// One connection: whatever the pool lends next shows what became of the one a transaction gave back.
layer(Database.layerPostgres({ url: postgresUrl, maxConnections: 1 }), {
  excludeTestServices: true,
  timeout: "30 seconds"
})("a transaction's connection on PostgreSQL", (it) => {
  const pid = (sql: SqlClient.SqlClient) => Effect.map(sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`, (rows) => rows[0]!.pid)

  it.effect("is taken straight from the pool and given back to it: the same one is lent again, outside any transaction", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const before = yield* pid(sql)
      const [inside, held] = yield* sql.withTransaction(
        Effect.zip(Effect.zipRight(sql`SELECT txid_current()`, pid(sql)), Effect.serviceOption(SqlClient.TransactionConnection))
      )
      expect(inside).toBe(before)
      // The driver connection the statements ran on holds the pooled client itself.
      const connection = Option.getOrThrow(held)[0] as { pg?: { query?: unknown } }
      expect(typeof connection.pg?.query).toBe("function")
      expect(yield* pid(sql)).toBe(before)
      expect(yield* openTransactionId(sql)).toBeNull()
    }))

  it.effect("a client that reported an error while a transaction held it is dropped by the pool, not lent again", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const before = yield* pid(sql)
      yield* sql.withTransaction(Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (held) =>
        Effect.sync(() => {
          const [connection] = Option.getOrThrow(held)
          ;(connection as { pg?: { emit: (event: string, error: Error) => void } }).pg?.emit("error", new Error("socket trouble"))
        })))
      expect(yield* pid(sql)).not.toBe(before)
      expect(yield* openTransactionId(sql)).toBeNull()
    }))
})

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
