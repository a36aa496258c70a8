/**
 * Lost connections on a real server that restarts: a private PostgreSQL instance (never the shared one),
 * restarted with `pg_ctl restart -m immediate` in the middle of a transaction.
 */
import { Failure } from "@bulwark/core"
import * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Layer, Option, Schedule } from "effect"
import * as Database from "../src/Database.js"
import * as Migrations from "../src/Migrations.js"
import * as Transaction from "../src/Transaction.js"
import * as PrivatePostgres from "./support/PrivatePostgres.js"

let pg: PrivatePostgres.PrivatePostgres

beforeAll(async () => {
  pg = await PrivatePostgres.start()
}, 60_000)

afterAll(async () => {
  await pg?.destroy()
}, 60_000)

const database = () => Database.layerPostgres({ url: pg.url, maxConnections: 4 })

const run = <A, E>(effect: Effect.Effect<A, E, SqlClient.SqlClient | Database.Database>) =>
  Effect.runPromise(Effect.scoped(Layer.build(database()).pipe(Effect.flatMap((context) => Effect.provide(effect, context)))))

describe("a lost connection on a private PostgreSQL", () => {
  it("a COMMIT whose connection a restart took is a typed, transient CommitUnknown, and the layer recovers", async () => {
    const outcome = await run(Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE IF NOT EXISTS commit_unknown (id int PRIMARY KEY)`
      const error = yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO commit_unknown (id) VALUES (1)`
        yield* Effect.promise(() => pg.restart())
      })).pipe(Effect.flip)
      const verdict = yield* Failure.classify(error)
      // The pool finds a live connection again by itself.
      const rows = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM commit_unknown`.pipe(
        Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("10 seconds")))
      )
      return { error, verdict, rows }
    }))
    expect(outcome.error).toBeInstanceOf(Transaction.CommitUnknown)
    expect(outcome.error.message).toMatch(/may or may not have committed/)
    expect(outcome.verdict).toEqual({ classification: "transient", category: "dependency" })
    // Here the restart came before COMMIT reached the server, so nothing committed.
    expect(outcome.rows[0]!.n).toBe(0)
  }, 30_000)

  it("a statement whose connection is lost fails the transaction with a typed ConnectionLost (its ROLLBACK failing too)", async () => {
    const error = await run(Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      return yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`SELECT 1`
        yield* Effect.promise(() => pg.restart())
        yield* sql`SELECT 2`
      })).pipe(Effect.flip)
    }))
    expect(error).toBeInstanceOf(Transaction.ConnectionLost)
  }, 30_000)

  it("a layer built while the server is down waits for it (bounded) instead of failing", async () => {
    await pg.stop()
    const starting = run(Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ one: number }>`SELECT 1 AS one`))
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    await pg.start()
    expect((await starting)[0]!.one).toBe(1)
  }, 30_000)

  it("migrations started while the server is away wait for it (bounded) and apply once", async () => {
    const applied = await run(Effect.gen(function*() {
      yield* Effect.promise(() => pg.stop())
      const restart = Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 1_000)).then(() => pg.start()))
      const [ids] = yield* Effect.all([
        Migrations.run("faults", [{ id: 1, name: "t", statements: ["CREATE TABLE faults_migrated (id int)"] }]),
        restart
      ], { concurrency: 2 })
      return ids
    }))
    expect(applied).toEqual([1])
  }, 30_000)

  it("a server killed outright (SIGKILL) and started again: statements fail typed meanwhile, then work again", async () => {
    const outcome = await run(Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`SELECT 1`
      yield* Effect.promise(() => pg.kill())
      const whileDead = yield* sql.withTransaction(sql`SELECT 1`).pipe(Effect.flip)
      yield* Effect.promise(() => pg.start())
      const after = yield* sql<{ one: number }>`SELECT 1 AS one`.pipe(
        Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("10 seconds")))
      )
      return { whileDead, after: after[0]!.one }
    }))
    expect(outcome.whileDead).toBeInstanceOf(Transaction.ConnectionLost)
    expect(outcome.after).toBe(1)
  }, 30_000)

  it("with the retry turned off, a layer built while the server is down fails with a typed error", async () => {
    await pg.stop()
    try {
      const exit = await Effect.runPromiseExit(Effect.scoped(Layer.build(Database.layerPostgres({ url: pg.url, connectRetry: 0 }))))
      const failure = exit._tag === "Failure" ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
      expect(failure?._tag).toBe("SqlError")
      expect(Transaction.isConnectionLoss(failure)).toBe(true)
    } finally {
      await pg.start()
    }
  }, 30_000)
})
