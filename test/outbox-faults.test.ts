/**
 * The outbox across PostgreSQL restarts, on a private instance (never the shared one), restarted with
 * `pg_ctl restart -m immediate`:
 * - a relay publishing a backlog through the Postgres transport loses nothing, keeps running, and resumes by
 *   itself (it used to die silently: a failed ROLLBACK/COMMIT of the transport's publish was a defect);
 * - the documented producer (`sql.withTransaction` around `Outbox.append`, with `Effect.retry`) retries a
 *   transaction whose connection a restart took (it could not: the error was a defect); so does
 *   `Inbox.process`, and the effect is applied once.
 */
import { Envelope, Supervise } from "@bulwark/core"
import { Inbox, Outbox, Relay } from "@bulwark/outbox"
import { Database, Transaction } from "@bulwark/sql"
import { PostgresTransport } from "@bulwark/transport-postgres"
import * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { type Duration, Effect, Layer, Logger, LogLevel, Schedule, Schema } from "effect"
import * as PrivatePostgres from "../packages/sql/test/support/PrivatePostgres.js"

let pg: PrivatePostgres.PrivatePostgres

beforeAll(async () => {
  pg = await PrivatePostgres.start()
}, 60_000)

afterAll(async () => {
  await pg?.destroy()
}, 60_000)

const OrderPaid = Schema.Struct({ orderId: Schema.String, n: Schema.Number })
const appendPaid = Outbox.append(OrderPaid)

const waitUntil = <E, R>(label: string, condition: Effect.Effect<boolean, E, R>, within: Duration.DurationInput) =>
  Effect.gen(function*() {
    // A check that fails (the database is down) is simply tried again.
    while (!(yield* Effect.orElseSucceed(condition, () => false))) yield* Effect.sleep("100 millis")
  }).pipe(Effect.timeoutFail({ duration: within, onTimeout: () => new Error(`timed out waiting until ${label}`) }))

const quiet = Logger.withMinimumLogLevel(LogLevel.Error)

describe("outbox on a restarting PostgreSQL", () => {
  it("a relay publishing a backlog through the Postgres transport survives a restart: nothing lost, it resumes by itself", async () => {
    const total = 600
    const relayId = "faults-relay"
    const database = Database.layerPostgres({ url: pg.url, maxConnections: 8 })
    const stores = Layer.mergeAll(
      Outbox.layer({ table: "faults_outbox" }),
      PostgresTransport.layer({ table: "faults_queue" })
    ).pipe(Layer.provideMerge(database))

    const program = Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      // The broker's inserts take a while (as a loaded broker's do), so the restart lands inside a publish's
      // transaction, which is where the relay used to die.
      yield* sql.unsafe(`CREATE OR REPLACE FUNCTION faults_slow() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$`)
      yield* sql.unsafe(`CREATE OR REPLACE TRIGGER faults_slow AFTER INSERT ON faults_queue
        FOR EACH STATEMENT EXECUTE FUNCTION faults_slow()`)
      for (let start = 0; start < total; start += 100) {
        const events = yield* Effect.forEach(Array.from({ length: 100 }, (_, i) => start + i), (n) =>
          Envelope.make({ type: "order.paid", source: "/orders", subject: `o-${n % 50}`, data: { orderId: `o-${n % 50}`, n } }))
        yield* sql.withTransaction(appendPaid("orders", events))
      }
      const published = sql<{ n: number }>`SELECT count(DISTINCT message_id)::int AS n FROM faults_queue WHERE topic = 'orders'`
        .pipe(Effect.map((rows) => rows[0]?.n ?? 0))

      // The relay in the background, as `Relay.layer` runs it in an application.
      yield* Layer.build(Relay.layer({ relayId, batchSize: 20, lease: "2 seconds", pollInterval: "200 millis" }))
      yield* waitUntil("publishing is under way", Effect.map(published, (n) => n >= 60), "20 seconds")
      const publishedAtRestart = yield* published
      yield* Effect.promise(() => pg.restart({ downMillis: 1_000 }))
      yield* waitUntil("the whole backlog is published", Effect.map(published, (n) => n === total), "25 seconds").pipe(Effect.ignore)
      const afterwards = yield* published.pipe(Effect.retry(Schedule.spaced("200 millis").pipe(Schedule.upTo("5 seconds"))))
      const health = (yield* Supervise.health).get(`outbox-relay:${relayId}`)
      return { publishedAtRestart, afterwards, health }
    })

    const outcome = await Effect.runPromise(Effect.scoped(Effect.provide(program, stores)).pipe(quiet))
    expect(outcome.publishedAtRestart).toBeLessThan(total)
    expect(outcome.afterwards).toBe(total)
    expect(outcome.health).toBe("up")
  }, 60_000)

  it("the documented producer retries a transaction whose connection a restart took, and commits it once", async () => {
    let attempts = 0
    const errors: Array<string> = []
    const layer = Outbox.layer({ table: "faults_producer_outbox" }).pipe(
      Layer.provideMerge(Database.layerPostgres({ url: pg.url, maxConnections: 4 }))
    )
    const program = Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE IF NOT EXISTS faults_orders (id text PRIMARY KEY, paid boolean NOT NULL DEFAULT false)`
      yield* sql`INSERT INTO faults_orders (id) VALUES ('o-1') ON CONFLICT DO NOTHING`

      // As the outbox documentation writes it: the state change and the event in one transaction, retried.
      const pay = (orderId: string) =>
        Effect.gen(function*() {
          yield* sql.withTransaction(Effect.gen(function*() {
            attempts++
            yield* sql`UPDATE faults_orders SET paid = true WHERE id = ${orderId}`
            const event = yield* Envelope.make({ type: "order.paid", source: "/orders", subject: orderId, data: { orderId, n: 1 } })
            yield* appendPaid("orders", [event])
            // The database restarts before this transaction commits.
            if (attempts === 1) yield* Effect.promise(() => pg.restart({ downMillis: 500 }))
          }))
        }).pipe(
          Effect.tapError((error) => Effect.sync(() => errors.push(error.constructor.name))),
          Effect.retry(Schedule.exponential("100 millis").pipe(Schedule.jittered, Schedule.upTo("20 seconds")))
        )

      yield* pay("o-1")
      const [order] = yield* sql<{ paid: boolean }>`SELECT paid FROM faults_orders WHERE id = 'o-1'`
      const [rows] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM faults_producer_outbox WHERE key = 'o-1'`
      return { paid: order?.paid, rows: rows?.n }
    })
    const outcome = await Effect.runPromise(Effect.scoped(Effect.provide(program, layer)).pipe(quiet))
    expect(attempts).toBeGreaterThan(1)
    // The first attempt's COMMIT found its connection gone: a typed CommitUnknown, then lost connections while down.
    expect(errors[0]).toBe(Transaction.CommitUnknown.name)
    expect(errors.every((name) => name === "CommitUnknown" || name === "ConnectionLost")).toBe(true)
    expect(outcome).toEqual({ paid: true, rows: 1 })
  }, 60_000)

  it("Inbox.process retried across a restart applies its effect once", async () => {
    let attempts = 0
    const layer = Inbox.layer({ table: "faults_inbox" }).pipe(
      Layer.provideMerge(Database.layerPostgres({ url: pg.url, maxConnections: 4 }))
    )
    const program = Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE IF NOT EXISTS faults_credits (message_id text NOT NULL)`
      const credit = Effect.gen(function*() {
        attempts++
        yield* sql`INSERT INTO faults_credits (message_id) VALUES ('m-1')`
        // The database restarts before the inbox transaction commits.
        if (attempts === 1) yield* Effect.promise(() => pg.restart({ downMillis: 500 }))
      })
      const first = yield* Inbox.process("m-1", "billing", credit).pipe(
        Effect.retry(Schedule.exponential("100 millis").pipe(Schedule.jittered, Schedule.upTo("20 seconds")))
      )
      // A redelivery of the same message is skipped.
      const again = yield* Inbox.process("m-1", "billing", credit)
      const [rows] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM faults_credits`
      return { first: first._tag, again: again._tag, credits: rows?.n }
    })
    const outcome = await Effect.runPromise(Effect.scoped(Effect.provide(program, layer)).pipe(quiet))
    expect(attempts).toBe(2)
    expect(outcome).toEqual({ first: "Some", again: "None", credits: 1 })
  }, 60_000)
})
