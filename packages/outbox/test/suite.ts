import { Database } from "@bulwark/sql"
import type { Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { expect, layer } from "@effect/vitest"
import { Effect, Fiber, type Layer, Logger, Option, Queue, Schedule, Stream } from "effect"
import * as Inbox from "../src/Inbox.js"
import * as Outbox from "../src/Outbox.js"
import * as OutboxStore from "../src/OutboxStore.js"
import type * as SqlOutboxStore from "../src/OutboxStore/Sql.js"
import * as Relay from "../src/Relay.js"
import { dropInbox, dropOutbox, type DatabaseLayer, recordingPublisher, uniqueTable } from "./helpers.js"

const encoder = new TextEncoder()

const raw = (id: string, key: string): Transport.OutgoingMessage => ({ id, key, payload: encoder.encode(id), headers: {} })

/** A fresh outbox table for one test, dropped at the end of the test's scope. */
const freshOutbox = (label: string) =>
  Effect.gen(function*() {
    const table = uniqueTable(label)
    const outbox = yield* Outbox.make({ table })
    yield* Effect.addFinalizer(() => dropOutbox(table))
    return outbox
  })

/** Runs a relay over `outbox` with `publisher` in the background of the current scope. */
const startRelay = (
  outbox: SqlOutboxStore.SqlOutboxStore,
  publisher: Layer.Layer<Transport.Publisher>,
  options: Relay.Options = {}
) =>
  Relay.run({ pollInterval: "100 millis", backoffBase: "10 millis", ...options }).pipe(
    Effect.provideService(OutboxStore.OutboxStore, outbox),
    Effect.provide(publisher),
    Effect.forkScoped
  )

const inTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.withTransaction(effect))

/** The relays registered as asleep on `outbox`. */
const sleepers = (outbox: SqlOutboxStore.SqlOutboxStore) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(sql<{ relay_id: string }>`SELECT relay_id FROM ${sql(outbox.sleepersTable)} ORDER BY relay_id`, (rows) => rows.map((r) => r.relay_id)))

/** Polls `check` every 10 ms until it holds; dies after 10 s, so a broken wake-up fails instead of hanging. */
const eventually = <E, R>(what: string, check: Effect.Effect<boolean, E, R>) =>
  check.pipe(
    Effect.filterOrFail((ok) => ok, () => what),
    Effect.retry(Schedule.spaced("10 millis")),
    Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => `timed out waiting until ${what}` }),
    Effect.orDie
  )

/** The outbox and inbox suites over one database engine (one engine start for both). */
export const suite = (name: string, database: DatabaseLayer) =>
  layer(database, { excludeTestServices: true, timeout: "60 seconds" })(`outbox and inbox on ${name}`, (it) => {
    it.scoped("appends notify only while a relay sleeps, and that relay wakes at once", () =>
      Effect.gen(function*() {
        const outbox = yield* freshOutbox("wake")
        const db = yield* Database.Database
        const heard = yield* Queue.unbounded<string>()
        yield* db.listen(outbox.channel).pipe(Stream.runForEach((payload) => Queue.offer(heard, payload)), Effect.forkScoped)
        // The forked stream issues LISTEN in its own time: probe until it hears. Probes (the test's and the
        // relay's) are skipped when reading what the appends sent.
        yield* eventually(
          "the test's LISTEN is active",
          db.notify(outbox.channel, "probe:test").pipe(
            Effect.zipRight(Queue.take(heard).pipe(Effect.timeout("50 millis"), Effect.option)),
            Effect.map(Option.isSome)
          )
        )
        const nextHeard = Effect.repeat(Queue.take(heard), { until: (payload) => !payload.startsWith("probe:") })
        // No relay sleeps: the append commits silently. Notifications arrive in commit order, so the marker
        // sent after it is the first one heard.
        yield* inTransaction(Outbox.appendMessages("t", [raw("quiet", "")])).pipe(Effect.provideService(Outbox.Outbox, outbox))
        yield* db.notify(outbox.channel, "marker")
        expect(yield* nextHeard).toBe("marker")

        // A relay that polls only hourly: after publishing the backlog it registers and sleeps.
        const recorder = recordingPublisher()
        yield* startRelay(outbox, recorder.layer, { pollInterval: "1 hour", relayId: "sleepy" })
        yield* eventually("the relay registers as asleep", Effect.map(sleepers(outbox), (ids) => ids.includes("sleepy")))
        expect(recorder.published.map((p) => p.message.id)).toEqual(["quiet"])

        yield* inTransaction(Outbox.appendMessages("t", [raw("wake-up", "")])).pipe(Effect.provideService(Outbox.Outbox, outbox))
        expect(yield* nextHeard).toBe("appended")
        yield* eventually("the notification wakes the relay", Effect.sync(() => recorder.published.length === 2))
        expect(recorder.published.map((p) => p.message.id)).toEqual(["quiet", "wake-up"])
      }))

    it.scoped("a busy relay deregisters, registers again when idle, and leaves on interruption; stale entries expire", () =>
      Effect.gen(function*() {
        const outbox = yield* freshOutbox("sleepers")
        const sql = yield* SqlClient.SqlClient
        const recorder = recordingPublisher()
        const relay = yield* startRelay(outbox, recorder.layer, { pollInterval: "1 hour", relayId: "busy" })
        yield* eventually("the idle relay registers", Effect.map(sleepers(outbox), (ids) => ids.length === 1))

        // A steady stream of one-row transactions: two rounds in a row find rows, so appends need not notify.
        // Each transaction and its bookkeeping run uninterruptibly, so `committed` is exact when the producer stops.
        let next = 0
        const committed: Array<string> = []
        const appendOne = Effect.suspend(() => {
          const id = `m-${next++}`
          return inTransaction(Outbox.appendMessages("t", [raw(id, "")])).pipe(Effect.tap(() => committed.push(id)))
        })
        const producer = yield* Effect.uninterruptible(appendOne).pipe(
          Effect.provideService(Outbox.Outbox, outbox),
          Effect.zipRight(Effect.sleep("2 millis")),
          Effect.forever,
          Effect.forkScoped
        )
        yield* eventually("the busy relay deregisters", Effect.map(sleepers(outbox), (ids) => ids.length === 0))
        yield* Fiber.interrupt(producer)
        yield* eventually("the relay registers again once idle", Effect.map(sleepers(outbox), (ids) => ids.length === 1))
        yield* outbox.drained
        expect(new Set(recorder.published.map((p) => p.message.id))).toEqual(new Set(committed))

        yield* Fiber.interrupt(relay)
        expect(yield* sleepers(outbox)).toEqual([])

        // A relay that died asleep leaves its entry; cleanup removes it once it is five minutes old.
        yield* sql`INSERT INTO ${sql(outbox.sleepersTable)} (relay_id, since) VALUES ('dead', now() - interval '6 minutes'), ('alive', now())`
        const janitor = yield* Relay.make().pipe(Effect.provideService(OutboxStore.OutboxStore, outbox), Effect.provide(recorder.layer))
        yield* janitor.cleanup
        expect(yield* sleepers(outbox)).toEqual(["alive"])
      }))

    it.scoped("a relay whose LISTEN never confirms does not register, and publishes by polling", () =>
      Effect.gen(function*() {
        // The store holds the database it was made with: make it with one whose LISTEN never delivers.
        const outbox = yield* freshOutbox("deaf").pipe(
          Effect.updateService(Database.Database, (db) => ({ ...db, listen: () => Stream.never }))
        )
        const recorder = recordingPublisher()
        const logs: Array<string> = []
        const logger = Logger.make(({ message }) => logs.push(String(message)))
        yield* Relay.run({ pollInterval: "50 millis", relayId: "deaf" }).pipe(
          Effect.provideService(OutboxStore.OutboxStore, outbox),
          Effect.provide(recorder.layer),
          Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
          Effect.forkScoped
        )
        yield* inTransaction(Outbox.appendMessages("t", [raw("polled", "")])).pipe(Effect.provideService(Outbox.Outbox, outbox))
        yield* eventually("the polling relay publishes", Effect.sync(() => recorder.published.length === 1))
        expect(yield* sleepers(outbox)).toEqual([])
        expect(logs.some((line) => line.includes("LISTEN not confirmed"))).toBe(true)
      }))

    it.scoped("a relay whose LISTEN is confirmed late registers then, and an append wakes it", () =>
      Effect.gen(function*() {
        // LISTEN comes up only after the relay's first second of probes: it starts deaf and polls hourly.
        const outbox = yield* freshOutbox("late").pipe(
          Effect.updateService(Database.Database, (db) => ({
            ...db,
            listen: (channel: string) => Stream.unwrap(Effect.as(Effect.sleep("1500 millis"), db.listen(channel)))
          }))
        )
        const recorder = recordingPublisher()
        yield* Relay.run({ pollInterval: "1 hour", relayId: "late" }).pipe(
          Effect.provideService(OutboxStore.OutboxStore, outbox),
          Effect.provide(recorder.layer),
          Effect.forkScoped
        )
        yield* eventually("the relay registers once LISTEN is up", Effect.map(sleepers(outbox), (ids) => ids.length === 1))
        yield* inTransaction(Outbox.appendMessages("t", [raw("woken", "")])).pipe(Effect.provideService(Outbox.Outbox, outbox))
        yield* eventually("the append wakes the relay", Effect.sync(() => recorder.published.length === 1))
      }))

    it.scoped("drop removes the outbox's tables and migration records; make starts afresh", () =>
      Effect.gen(function*() {
        const table = uniqueTable("drop")
        const first = yield* Outbox.make({ table })
        yield* inTransaction(first.appendMessages("t", [raw("old", "")]))
        yield* Outbox.drop(table)
        const sql = yield* SqlClient.SqlClient
        const left = yield* sql<{ name: string }>`SELECT table_name AS name FROM information_schema.tables WHERE table_name IN (${table}, ${first.sleepersTable})`
        expect(left).toEqual([])
        const again = yield* Outbox.make({ table })
        yield* Effect.addFinalizer(() => dropOutbox(table))
        expect(yield* again.backlog).toBe(0)
        expect(yield* Effect.flip(Outbox.drop("Not A Table"))).toMatchObject({ _tag: "InvalidTableName" })
      }))

    it.scoped("a crash before commit is reprocessed; a redelivery after commit is skipped", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const table = uniqueTable("inbox")
        const state = `${table}_state`
        const inbox = yield* Inbox.make({ table })
        yield* Effect.addFinalizer(() => Effect.zipRight(dropInbox(table), sql`DROP TABLE IF EXISTS ${sql(state)}`.pipe(Effect.orDie)))
        yield* sql`CREATE TABLE ${sql(state)} (message_id text, amount int)`
        const credit = (messageId: string, crash: "before-commit" | "never") =>
          Inbox.process(messageId, "billing", Effect.gen(function*() {
            yield* sql`INSERT INTO ${sql(state)} (message_id, amount) VALUES (${messageId}, 10)`
            if (crash === "before-commit") return yield* Effect.die("process killed before commit")
            return "credited"
          })).pipe(Effect.provideService(Inbox.Inbox, inbox))
        const rows = Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(state)}`, (r) => r[0]!.n)

        const crashed = yield* Effect.exit(credit("m-1", "before-commit"))
        expect(crashed._tag).toBe("Failure")
        expect(yield* rows).toBe(0)
        expect(yield* Inbox.isProcessed("m-1", "billing").pipe(Effect.provideService(Inbox.Inbox, inbox))).toBe(false)

        // Redelivered after the crash: processed, because nothing had committed.
        expect(yield* credit("m-1", "never")).toEqual(Option.some("credited"))
        expect(yield* rows).toBe(1)
        // The ack was lost after the commit; the redelivery is skipped.
        expect(yield* credit("m-1", "never")).toEqual(Option.none())
        expect(yield* rows).toBe(1)
        // Another consumer of the same message has its own record.
        const other = yield* Inbox.process("m-1", "audit", Effect.succeed("seen")).pipe(Effect.provideService(Inbox.Inbox, inbox))
        expect(other).toEqual(Option.some("seen"))
        expect(yield* Inbox.purge("1 hour").pipe(Effect.provideService(Inbox.Inbox, inbox))).toBe(0)
      }))
  })

