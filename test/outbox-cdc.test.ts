/**
 * The change-data-capture relay on a private PostgreSQL started with `wal_level = logical` (never the shared
 * server, whose configuration and slots are not ours):
 * - transactions that commit in another order than their ids are published in commit order;
 * - a relay process killed after the transport confirmed a batch but before it confirmed the slot loses
 *   nothing, and the only duplicates are that batch's redeliveries, which the SQL idempotency store absorbs;
 * - a row that keeps failing is dead (with a dead-letter copy) and its key's next row waits for it;
 * - a fatal fault reaches `Relay.guard` through `CdcRelay.layerMonitored`;
 * - rows already in the outbox before the first start are published, and the relay resumes by itself after
 *   the server restarts (redelivering what it confirmed since the server's last checkpoint).
 */
import { Delivery, Failure, Supervise } from "@bulwark/core"
import * as IdempotencyStore from "@bulwark/idempotency/IdempotencyStore"
import * as SqlIdempotencyStore from "@bulwark/idempotency/IdempotencyStore/Sql"
import { Outbox, Relay } from "@bulwark/outbox"
import * as CdcRelay from "@bulwark/outbox/CdcRelay"
import { Database } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Deferred, type Duration, Effect, Fiber, Layer, Logger, LogLevel, Option, Schedule } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { recordingPublisher } from "../packages/outbox/test/helpers.js"
import * as PrivatePostgres from "../packages/sql/test/support/PrivatePostgres.js"

let pg: PrivatePostgres.PrivatePostgres

beforeAll(async () => {
  pg = await PrivatePostgres.start({ settings: { wal_level: "logical", max_wal_senders: "10", max_replication_slots: "10" } })
}, 60_000)

afterAll(async () => {
  await pg?.destroy()
}, 60_000)

const encoder = new TextEncoder()
const message = (id: string, key: string) => ({ id, key, payload: encoder.encode(id), headers: { "ce-id": id } })
const quiet = Logger.withMinimumLogLevel(LogLevel.Error)

const waitUntil = <E, R>(label: string, condition: Effect.Effect<boolean, E, R>, within: Duration.DurationInput) =>
  Effect.gen(function*() {
    while (!(yield* Effect.orElseSucceed(condition, () => false))) yield* Effect.sleep("50 millis")
  }).pipe(Effect.timeoutFail({ duration: within, onTimeout: () => new Error(`timed out waiting until ${label}`) }))

// The relay streams once a walsender (its replication connection) holds the slot. The slot's `active` alone
// does not say so: the relay's own session holds the slot while `pg_create_logical_replication_slot` runs,
// which waits for the transactions in progress to end, before the relay has read how far its backfill goes;
// rows committed by then are published from the table, in id order.
const slotActive = (name: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
        WHERE s.slot_name = ${`bulwark_cdc_${name}`}`,
      (rows) => (rows[0]?.n ?? 0) > 0
    ))

// Whether the slot exists and a session that is not a walsender holds it: it is being created.
const slotBeingCreated = (name: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_replication_slots s
        WHERE s.slot_name = ${`bulwark_cdc_${name}`} AND s.active
          AND NOT EXISTS (SELECT 1 FROM pg_stat_replication r WHERE r.pid = s.active_pid)`,
      (rows) => (rows[0]?.n ?? 0) > 0
    ))

describe("CDC relay on a private PostgreSQL with wal_level = logical", () => {
  it("publishes transactions in commit order, not id order, and deletes what it published", async () => {
    const table = "cdc_order"
    const recorder = recordingPublisher()
    const program = Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const outbox = yield* Outbox.make({ table })
      // The relay starts while another session's transaction is in progress, so creating its slot waits for
      // it: the slot is held, but nothing streams, for a while. The appends below must not start before the
      // relay streams (they would be committed before the slot is consistent, and published from the table).
      const inProgress = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const other = yield* Effect.fork(sql.withTransaction(
        sql`SELECT txid_current()`.pipe(
          Effect.zipRight(Deferred.succeed(inProgress, undefined)),
          Effect.zipRight(Deferred.await(release))
        )
      ))
      yield* Deferred.await(inProgress)
      yield* Effect.forkScoped(CdcRelay.run({ connection: pg.url, table, name: "order" }).pipe(Effect.provide(recorder.layer)))
      yield* waitUntil("the slot is being created", slotBeingCreated("order"), "20 seconds")
      yield* Effect.forkScoped(Effect.delay(Deferred.succeed(release, undefined), "200 millis"))
      yield* waitUntil("the slot streams", slotActive("order"), "20 seconds")

      // Twelve transactions append in id order (one key, so order matters) and commit in reverse order.
      const count = 12
      const commits = yield* Effect.forEach(Array.from({ length: count }), () => Deferred.make<void>())
      const fibers: Array<Fiber.RuntimeFiber<void, unknown>> = []
      for (let i = 0; i < count; i++) {
        const appended = yield* Deferred.make<void>()
        fibers.push(yield* Effect.fork(sql.withTransaction(
          outbox.appendMessages("orders", [message(`m-${i}`, "order-1")]).pipe(
            Effect.zipRight(Deferred.succeed(appended, undefined)),
            Effect.zipRight(Deferred.await(commits[i]!))
          )
        )))
        yield* Deferred.await(appended)
      }
      for (let i = count - 1; i >= 0; i--) {
        yield* Deferred.succeed(commits[i]!, undefined)
        yield* Fiber.join(fibers[i]!)
      }
      yield* Fiber.join(other)
      yield* outbox.drained.pipe(Effect.timeout("20 seconds"))
      const [left] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)}`
      return { order: recorder.published.map((p) => p.message.id), left: left?.n }
    })
    const outcome = await Effect.runPromise(
      Effect.scoped(program).pipe(Effect.provide(Database.layerPostgres({ url: pg.url, maxConnections: 16 })), quiet)
    )
    expect(outcome.order).toEqual(Array.from({ length: 12 }, (_, i) => `m-${11 - i}`))
    expect(outcome.left).toBe(0)
    expect(recorder.published[0]!.message.headers).toEqual({ "ce-id": "m-11" })
    expect(new TextDecoder().decode(recorder.published[0]!.message.payload)).toBe("m-11")
  })

  it("a relay killed between the transport's confirmation and the slot's loses nothing; duplicates are only that batch, absorbed by the idempotency store", async () => {
    const table = "cdc_killed"
    const sink = "cdc_killed_sink"
    const child = fileURLToPath(new URL("./support/cdc-relay-child.ts", import.meta.url))
    const ids = Array.from({ length: 300 }, (_, i) => `e-${i}`)
    const program = Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const outbox = yield* Outbox.make({ table })
      yield* sql`CREATE TABLE ${sql(sink)} (seq bigserial, message_id text NOT NULL, topic text NOT NULL)`

      const proc = spawn(process.execPath, ["--import", "tsx", child, pg.url, table, sink], { stdio: ["ignore", "pipe", "pipe"] })
      yield* Effect.addFinalizer(() => Effect.sync(() => proc.kill("SIGKILL")))
      let stdout = ""
      let stderr = ""
      proc.stdout.on("data", (chunk) => (stdout += String(chunk)))
      proc.stderr.on("data", (chunk) => (stderr += String(chunk)))
      const exited = new Promise<void>((resolve) => proc.on("exit", () => resolve()))
      yield* waitUntil("the child's slot streams", slotActive("killed"), "30 seconds")

      for (let start = 0; start < ids.length; start += 10) {
        yield* sql.withTransaction(outbox.appendMessages("orders", ids.slice(start, start + 10).map((id, i) => message(id, `k-${i}`))))
      }
      // The transport confirmed a batch; the child now holds before deleting the rows and confirming the slot.
      yield* waitUntil("the child published a batch", Effect.sync(() => stdout.includes("\n")), "30 seconds")
      proc.kill("SIGKILL")
      yield* Effect.promise(() => exited)
      const firstBatch = stdout.split("\n")[0]!.replace("published ", "").split(",")

      // A new relay of the same name resumes from the slot's confirmed position.
      const recorder = recordingPublisher((topic, messages) =>
        Effect.asVoid(sql`INSERT INTO ${sql(sink)} ${sql.insert(messages.map((m) => ({ message_id: m.id, topic })))}`)
      )
      yield* Effect.forkScoped(CdcRelay.run({ connection: pg.url, table, name: "killed" }).pipe(Effect.provide(recorder.layer)))
      yield* outbox.drained.pipe(Effect.timeout("30 seconds"))

      // The consumer: every delivery in broker order through the real SQL idempotency store.
      const store = yield* IdempotencyStore.IdempotencyStore
      const deliveries = yield* sql<{ message_id: string }>`SELECT message_id FROM ${sql(sink)} ORDER BY seq`
      const applied: Array<string> = []
      const absorbed: Array<string> = []
      for (const { message_id } of deliveries) {
        const claim = yield* store.claim(`id:${message_id}`, { lease: "30 seconds" })
        if (claim._tag === "Fresh") {
          applied.push(message_id)
          yield* store.complete(`id:${message_id}`, claim.token, null)
        } else {
          absorbed.push(message_id)
        }
      }
      return { stderr, firstBatch, applied, absorbed }
    })
    const database = Database.layerPostgres({ url: pg.url, maxConnections: 8 })
    const outcome = await Effect.runPromise(
      Effect.scoped(program).pipe(
        Effect.provide(SqlIdempotencyStore.layer({ table: "cdc_idempotency" }).pipe(Layer.provideMerge(database))),
        quiet
      )
    )
    expect(outcome.stderr).toBe("")
    expect(outcome.firstBatch.length).toBeGreaterThan(0)
    expect(outcome.applied.length).toBe(ids.length)
    expect([...outcome.applied].sort()).toEqual([...ids].sort())
    // Redelivered: exactly the batch the transport had confirmed when the relay died, nothing else.
    expect([...outcome.absorbed].sort()).toEqual([...outcome.firstBatch].sort())
  })

  it("publishes the rows already in the outbox at its first start, and resumes by itself after the server restarts", async () => {
    const table = "cdc_restart"
    const recorder = recordingPublisher()
    const distinct = () => new Set(recorder.published.map((p) => p.message.id)).size
    const program = Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const outbox = yield* Outbox.make({ table })
      const append = (from: number, to: number) =>
        Effect.forEach(Array.from({ length: (to - from) / 10 }, (_, b) => from + b * 10), (start) =>
          sql.withTransaction(outbox.appendMessages("orders", Array.from({ length: 10 }, (_, i) => message(`r-${start + i}`, `k-${i}`)))).pipe(
            // The documented producer: a transaction the restart broke is tried again.
            Effect.retry(Schedule.spaced("200 millis").pipe(Schedule.upTo("30 seconds")))
          ), { discard: true })

      yield* append(0, 50) // before the relay's first start: not in any slot
      yield* Effect.forkScoped(CdcRelay.run({ connection: pg.url, table, name: "restart", batchSize: 20 }).pipe(Effect.provide(recorder.layer)))
      yield* waitUntil("the slot streams", slotActive("restart"), "20 seconds")
      yield* append(50, 150)
      yield* waitUntil("the first 150 are published", Effect.sync(() => distinct() === 150), "20 seconds")

      yield* Effect.promise(() => pg.restart({ downMillis: 1_000 }))
      yield* append(150, 250)
      yield* waitUntil("all 250 are published", Effect.sync(() => distinct() === 250), "40 seconds")
      const health = (yield* Supervise.health).get("outbox-cdc:restart")
      // First deliveries of the rows appended after the restart, in the order they were appended.
      const order = [...new Set(recorder.published.map((p) => p.message.id))].filter((id) => Number(id.slice(2)) >= 150)
      const counts = new Map<string, number>()
      for (const p of recorder.published) counts.set(p.message.id, (counts.get(p.message.id) ?? 0) + 1)
      const twice = [...counts].filter(([, n]) => n > 1).map(([id]) => Number(id.slice(2)))
      return { health, order, twice }
    })
    const outcome = await Effect.runPromise(
      Effect.scoped(program).pipe(Effect.provide(Database.layerPostgres({ url: pg.url, maxConnections: 4 })), quiet)
    )
    expect(outcome.health).toBe("up")
    // A crash (`-m immediate`) loses the slot position confirmed since the last checkpoint, so the server
    // streams again what was published before it: redeliveries of rows from before the restart (a session
    // that breaks again before confirming redelivers them once more).
    expect(outcome.twice.every((n) => n >= 50 && n < 150)).toBe(true)
    expect(outcome.order).toEqual(Array.from({ length: 100 }, (_, i) => `r-${150 + i}`))
  })
  it("a row that keeps failing is retried in place, then dead with a copy on the dead-letter topic; a permanent failure at once; the key's next row waits for it", async () => {
    const table = "cdc_dead"
    const recorder = recordingPublisher((topic, messages) =>
      topic === "orders" && messages.some((m) => m.id === "poison")
        ? Effect.fail(new Failure.TransientError({ category: "dependency", message: "broker refused" }))
        : topic === "orders" && messages.some((m) => m.id === "refused")
        ? Effect.fail(new Failure.PermanentError({ category: "schema", message: "refused for good" }))
        : Effect.void
    )
    const program = Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const outbox = yield* Outbox.make({ table })
      yield* Effect.forkScoped(
        CdcRelay.run({ connection: pg.url, table, name: "dead", maxAttempts: 3, backoffBase: "50 millis" }).pipe(
          Effect.provide(recorder.layer),
          // The application classifies a PublishError by what the broker said (its cause).
          Failure.withRules([(error) =>
            error instanceof Transport.PublishError ? Option.some(Failure.classifyWith(Failure.defaultRules, error.cause)) : Option.none()
          ])
        )
      )
      yield* waitUntil("the slot streams", slotActive("dead"), "20 seconds")
      yield* sql.withTransaction(outbox.appendMessages("orders", [
        message("ok-1", "K"),
        message("poison", "P"),
        message("refused", "R"),
        message("ok-2", "K")
      ]))
      yield* sql.withTransaction(outbox.appendMessages("orders", [message("after", "P")]))
      yield* outbox.drained.pipe(Effect.timeout("20 seconds"))
      return { dead: yield* outbox.deadLetters(), backlog: yield* outbox.backlog }
    })
    const outcome = await Effect.runPromise(
      Effect.scoped(program).pipe(Effect.provide(Database.layerPostgres({ url: pg.url, maxConnections: 4 })), quiet)
    )
    // First deliveries (a session that restarts under load may redeliver, which consumers absorb).
    const onTopic = [...new Set(recorder.published.filter((p) => p.topic === "orders").map((p) => p.message.id))]
    expect(onTopic).toEqual(["ok-1", "ok-2", "after"])
    expect(outcome.dead.map((d) => [d.messageId, d.attempts, d.error.classification, d.deadLetterPublished])).toEqual([
      ["poison", 3, "transient", true],
      ["refused", 1, "permanent", true]
    ])
    const copies = recorder.published.filter((p) => p.topic === Delivery.deadLetterTopic("orders"))
    expect([...new Set(copies.map((p) => p.message.id))]).toEqual(["poison", "refused"])
    expect(Delivery.readDeadLetterReason(copies[0]!.message.headers)?.attempts).toBe(3)
    expect(outcome.backlog).toBe(0)
  })

  it("with layerMonitored, a relay that dies (a defect in the publisher) ends the program guarded by Relay.guard with RelayFailed", async () => {
    const table = "cdc_fatal"
    const program = Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const outbox = yield* Outbox.make({ table })
      yield* sql.withTransaction(outbox.appendMessages("orders", [message("m-1", "")]))
      return yield* Relay.guard(Effect.never).pipe(
        Effect.provide(CdcRelay.layerMonitored({ connection: pg.url, table, name: "fatal" }).pipe(
          Layer.provide(Layer.succeed(Transport.Publisher, { publish: () => Effect.die(new Error("a bug in the publisher")) }))
        )),
        Effect.timeout("20 seconds"),
        Effect.flip
      )
    })
    const failure = await Effect.runPromise(
      Effect.scoped(program).pipe(Effect.provide(Database.layerPostgres({ url: pg.url, maxConnections: 2 })), Logger.withMinimumLogLevel(LogLevel.None))
    )
    expect(failure._tag).toBe("RelayFailed")
    expect((failure as Relay.RelayFailed).relayId).toBe("cdc:fatal")
    expect(failure.message).toContain("a bug in the publisher")
    expect((await Effect.runPromise(Supervise.health)).get("outbox-cdc:fatal")).toBe("failed")
  })
})
