import { Delivery, Envelope, Failure } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import { Memory, Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { expect, layer } from "@effect/vitest"
import { Chunk, Deferred, Duration, Effect, Fiber, Layer, Logger, Metric, Option, Queue, Schedule, Schema, Stream } from "effect"
import * as Inbox from "../src/Inbox.js"
import * as Outbox from "../src/Outbox.js"
import * as Relay from "../src/Relay.js"
import { dropInbox, dropOutbox, type DatabaseLayer, recordingPublisher, uniqueTable } from "./helpers.js"

const Order = Schema.Struct({ orderId: Schema.String, amount: Schema.Number })
const appendOrders = Outbox.append(Order)
const encoder = new TextEncoder()

const envelope = (subject: string, n: number, headers: Record<string, string> = {}) =>
  Envelope.make({ type: "com.example.order.paid", source: "/orders", subject, data: { orderId: `o-${n}`, amount: n }, id: `${subject}-${n}`, headers })

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
  outbox: Outbox.OutboxService,
  publisher: Layer.Layer<Transport.Publisher>,
  options: Relay.Options = {}
) =>
  Relay.run({ pollInterval: "100 millis", backoffBase: "10 millis", ...options }).pipe(
    Effect.provideService(Outbox.Outbox, outbox),
    Effect.provide(publisher),
    Effect.forkScoped
  )

const inTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.withTransaction(effect))

/** The relays registered as asleep on `outbox`. */
const sleepers = (outbox: Outbox.OutboxService) =>
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
    it.scoped("append outside a transaction is a typed error and writes nothing", () =>
      Effect.gen(function*() {
        const outbox = yield* freshOutbox("outside")
        const error = yield* appendOrders("orders", [yield* envelope("k", 1)]).pipe(
          Effect.provideService(Outbox.Outbox, outbox),
          Effect.flip
        )
        expect(error._tag).toBe("OutsideTransaction")
        expect(yield* outbox.backlog).toBe(0)
      }))

    it.scoped("a rolled-back transaction leaves no row; a committed one is relayed intact, trace headers included", () =>
      Effect.gen(function*() {
        const outbox = yield* freshOutbox("roundtrip")
        const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        const kept = yield* envelope("order-1", 1, { traceparent, "correlation-id": "c-1" })
        const rolledBack = yield* inTransaction(Effect.zipRight(
          appendOrders("orders", [yield* envelope("order-2", 2)]),
          Effect.fail("abort" as const)
        )).pipe(Effect.provideService(Outbox.Outbox, outbox), Effect.flip)
        expect(rolledBack).toBe("abort")
        expect(yield* outbox.backlog).toBe(0)
        yield* inTransaction(appendOrders("orders", [kept])).pipe(Effect.provideService(Outbox.Outbox, outbox))
        expect(yield* outbox.backlog).toBe(1)

        const memory = yield* Memory.make()
        const received = yield* memory.subscribe("orders").pipe(Stream.take(1), Stream.runCollect, Effect.fork)
        yield* startRelay(outbox, Layer.succeed(Transport.Publisher, { publish: memory.publish }))
        yield* outbox.drained
        expect(yield* outbox.backlog).toBe(0)
        const [delivery] = Chunk.toReadonlyArray(yield* Fiber.join(received))
        yield* delivery!.ack
        expect(delivery!.message.id).toBe("order-1-1")
        expect(delivery!.message.key).toBe("order-1")
        expect(delivery!.message.headers.traceparent).toBe(traceparent)
        const decoded = yield* Envelope.decode(Order)(delivery!.message.payload)
        expect(decoded.data).toEqual({ orderId: "o-1", amount: 1 })
        expect(decoded.headers.traceparent).toBe(traceparent)
        expect(decoded.headers["correlation-id"]).toBe("c-1")
      }))

    it.scoped("per key order: a key's next row waits for the previous one's confirmation; other keys do not wait", () =>
      Effect.gen(function*() {
        const outbox = yield* freshOutbox("order")
        const a1Failures = { left: 2 }
        const recorder = recordingPublisher((_, messages) =>
          messages.some((m) => m.id === "a1") && a1Failures.left-- > 0
            ? Effect.fail(new Failure.TransientError({ category: "dependency", message: "broker hiccup" }))
            : Effect.void
        )
        yield* inTransaction(Outbox.appendMessages("t", [raw("a1", "A"), raw("a2", "A"), raw("b1", "B"), raw("a3", "A"), raw("b2", "B")]))
          .pipe(Effect.provideService(Outbox.Outbox, outbox))
        const relay = yield* Relay.make({ backoffBase: "300 millis" }).pipe(
          Effect.provideService(Outbox.Outbox, outbox),
          Effect.provide(recorder.layer)
        )
        // The first round sees only the heads of A and B.
        const first = yield* relay.round
        expect(first.claimed).toBe(2)
        expect(first.retried).toBe(1)
        expect(recorder.published.map((p) => p.message.id)).toEqual(["b1"])
        yield* startRelay(outbox, recorder.layer, { backoffBase: "300 millis" })
        yield* outbox.drained
        const ids = recorder.published.map((p) => p.message.id)
        expect(ids.filter((id) => id.startsWith("a"))).toEqual(["a1", "a2", "a3"])
        expect(ids.filter((id) => id.startsWith("b"))).toEqual(["b1", "b2"])
        // B went ahead while A was backing off.
        expect(ids.indexOf("b2")).toBeLessThan(ids.indexOf("a1"))
      }))

    it.scoped("a row that keeps failing is dead: recorded with its error and copied to the dead-letter topic", () =>
      Effect.gen(function*() {
        const outbox = yield* freshOutbox("dead")
        const recorder = recordingPublisher((topic, messages) =>
          topic === "t" && messages.some((m) => m.id === "poison")
            ? Effect.fail(new Failure.TransientError({ category: "dependency", message: "rejected" }))
            : Effect.void
        )
        yield* inTransaction(Outbox.appendMessages("t", [raw("ok-1", "K"), raw("poison", "P"), raw("ok-2", "K"), raw("after", "P")]))
          .pipe(Effect.provideService(Outbox.Outbox, outbox))
        yield* startRelay(outbox, recorder.layer, { maxAttempts: 3 })
        yield* outbox.drained
        const onTopic = recorder.published.filter((p) => p.topic === "t").map((p) => p.message.id)
        expect(onTopic).toEqual(expect.arrayContaining(["ok-1", "ok-2", "after"]))
        expect(onTopic).not.toContain("poison")
        const [dead] = yield* outbox.deadLetters()
        expect(dead!.messageId).toBe("poison")
        expect(dead!.attempts).toBe(3)
        expect(dead!.deadLetterPublished).toBe(true)
        expect(dead!.error.classification).toBe("transient")
        const copy = recorder.published.find((p) => p.topic === Delivery.deadLetterTopic("t"))!
        expect(copy.message.id).toBe("poison")
        const reason = Delivery.readDeadLetterReason(copy.message.headers)
        expect(reason?.attempts).toBe(3)
        expect(copy.message.headers[Delivery.DeadLetterHeaders.originTopic]).toBe("t")
        // The key's next row went out only after its predecessor was settled (dead).
        expect(onTopic.indexOf("after")).toBeGreaterThanOrEqual(0)
      }))

    it.scoped("backlog, lag and their gauges; published rows are deleted after the retention period", () =>
      Effect.gen(function*() {
        const outbox = yield* freshOutbox("observe")
        yield* inTransaction(Outbox.appendMessages("t", [raw("x1", ""), raw("x2", ""), raw("x3", "")]))
          .pipe(Effect.provideService(Outbox.Outbox, outbox))
        yield* Effect.sleep("20 millis")
        expect(yield* outbox.backlog).toBe(3)
        expect(Duration.toMillis(yield* outbox.lag)).toBeGreaterThan(0)
        yield* Outbox.updateMetrics.pipe(Effect.provideService(Outbox.Outbox, outbox))
        expect((yield* Metric.value(Outbox.backlogGauge)).value).toBe(3)
        expect((yield* Metric.value(Outbox.lagGauge)).value).toBeGreaterThan(0)

        const recorder = recordingPublisher()
        const relay = yield* Relay.make({ retention: "1 hour" }).pipe(Effect.provideService(Outbox.Outbox, outbox), Effect.provide(recorder.layer))
        expect((yield* relay.round).published).toBe(3)
        expect(yield* outbox.backlog).toBe(0)
        expect(Duration.toMillis(yield* outbox.lag)).toBe(0)
        expect(yield* relay.cleanup).toBe(0)
        const eager = yield* Relay.make({ retention: 0 }).pipe(Effect.provideService(Outbox.Outbox, outbox), Effect.provide(recorder.layer))
        yield* Effect.sleep("5 millis")
        expect(yield* eager.cleanup).toBe(3)
      }))

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
        const janitor = yield* Relay.make().pipe(Effect.provideService(Outbox.Outbox, outbox), Effect.provide(recorder.layer))
        yield* janitor.cleanup
        expect(yield* sleepers(outbox)).toEqual(["alive"])
      }))

    it.scoped("a relay whose LISTEN never confirms does not register, and publishes by polling", () =>
      Effect.gen(function*() {
        const outbox = yield* freshOutbox("deaf")
        const recorder = recordingPublisher()
        const logs: Array<string> = []
        const logger = Logger.make(({ message }) => logs.push(String(message)))
        yield* Relay.run({ pollInterval: "50 millis", relayId: "deaf" }).pipe(
          Effect.provideService(Outbox.Outbox, outbox),
          Effect.provide(recorder.layer),
          Effect.updateService(Database.Database, (db) => ({ ...db, listen: () => Stream.never })),
          Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
          Effect.forkScoped
        )
        yield* inTransaction(Outbox.appendMessages("t", [raw("polled", "")])).pipe(Effect.provideService(Outbox.Outbox, outbox))
        yield* eventually("the polling relay publishes", Effect.sync(() => recorder.published.length === 1))
        expect(yield* sleepers(outbox)).toEqual([])
        expect(logs.some((line) => line.includes("LISTEN not confirmed"))).toBe(true)
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

    it.scoped("two relays on one table never publish a row twice in a fault-free run", () =>
      Effect.gen(function*() {
        const outbox = yield* freshOutbox("two")
        const recorder = recordingPublisher(() => Effect.sleep("1 millis"))
        const ids = Array.from({ length: 300 }, (_, i) => `m-${i}`)
        yield* startRelay(outbox, recorder.layer, { batchSize: 17, relayId: "one" })
        yield* startRelay(outbox, recorder.layer, { batchSize: 23, relayId: "two" })
        for (let i = 0; i < ids.length; i += 50) {
          yield* inTransaction(Outbox.appendMessages("t", ids.slice(i, i + 50).map((id, j) => raw(id, `k-${(i + j) % 40}`))))
            .pipe(Effect.provideService(Outbox.Outbox, outbox))
        }
        yield* outbox.drained
        const got = recorder.published.map((p) => p.message.id)
        expect(got.length).toBe(ids.length)
        expect(new Set(got).size).toBe(ids.length)
      }))

    it.scoped("a relay interrupted mid-batch loses nothing: its claim expires and another relay publishes the rest", () =>
      Effect.gen(function*() {
        const outbox = yield* freshOutbox("interrupt")
        const hung = yield* Deferred.make<ReadonlyArray<string>>()
        const recorder = recordingPublisher((_, messages, call) =>
          call === 1
            // Accepts the first half of the second batch, then hangs: the broker has part of it.
            ? Effect.zipRight(
              Deferred.succeed(hung, messages.map((m) => m.id)),
              Effect.never
            )
            : Effect.void
        )
        const ids = Array.from({ length: 100 }, (_, i) => `m-${i}`)
        yield* inTransaction(Outbox.appendMessages("t", ids.map((id, i) => raw(id, `k-${i % 30}`))))
          .pipe(Effect.provideService(Outbox.Outbox, outbox))
        const doomed = yield* startRelay(outbox, recorder.layer, { batchSize: 20, lease: "300 millis", relayId: "doomed" })
        const inFlight = yield* Deferred.await(hung)
        yield* Fiber.interrupt(doomed)
        expect(yield* outbox.backlog).toBeGreaterThan(0)
        yield* startRelay(outbox, recorder.layer, { batchSize: 20, relayId: "heir" })
        yield* outbox.drained
        const got = recorder.published.map((p) => p.message.id)
        // Nothing lost; an idempotent consumer (a set) absorbs any duplicate, and duplicates come only from the cut batch.
        expect(new Set(got)).toEqual(new Set(ids))
        const seen = new Set<string>()
        const duplicates = got.filter((id) => seen.has(id) || (seen.add(id), false))
        for (const id of duplicates) expect(inFlight).toContain(id)
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

