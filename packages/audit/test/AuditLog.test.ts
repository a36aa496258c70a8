import { AuditLog as Port, Envelope, Failure } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import * as MemoryTransport from "@bulwark/transport/Transport/Memory"
import { describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Clock, Effect, Fiber, Layer, Logger, LogLevel, Schema, Stream } from "effect"
import type { Options } from "../src/AuditLog.js"
import * as MemoryAuditLog from "../src/AuditLog/Memory.js"
import * as SqlAuditLog from "../src/AuditLog/Sql.js"
import * as History from "../src/History.js"
import { makeWriter } from "../src/internal/writer.js"
import { Ingress, ReplayGuard, Signing, Verifier } from "@bulwark/webhook"

const day = 86_400_000
const bytes = (text: string) => new TextEncoder().encode(text)

const options: Options = {
  keepMessages: ["kept"],
  // The hook drops what the user says must never be stored.
  redact: (entry) => entry.topic === "secret" ? undefined : entry
}

/** The contract every driver keeps, run over each (`make` builds a fresh log with `options`). */
const contract = (driver: string, layer: () => Layer.Layer<Port.AuditLog, unknown>) =>
  describe(`AuditLog contract: ${driver}`, () => {
    it.live("records, reads timelines and causation, queries by page, redacts and keeps only allowed messages, retains by day", () =>
      Effect.gen(function*() {
        const log = yield* Port.AuditLog
        const now = yield* Clock.currentTimeMillis
        const entry = (fields: Omit<Port.EntryInput, "component"> & { at: number }) => new Port.Entry({ component: "test", ...fields })
        yield* log.write([
          entry({ eventId: "old", stage: "received", at: now - 3 * day }),
          entry({ eventId: "e1", stage: "received", at: now - 30, topic: "payments", detail: { verification: "valid", authorization: "Bearer x" } }),
          entry({ eventId: "e1", stage: "published", at: now - 20, topic: "kept", message: { key: "k", payload: bytes("one"), headers: { a: "1" } } }),
          entry({ eventId: "e2", stage: "published", at: now - 15, topic: "other", causationId: "e1", message: { key: "k", payload: bytes("two"), headers: {} } }),
          entry({ eventId: "e2", stage: "processed", at: now - 10, topic: "other", outcome: "acked", durationMs: 3, attempt: 1, causationId: "e1" }),
          entry({ eventId: "e3", stage: "dead-lettered", at: now - 5, topic: "other", category: "schema", causationId: "e2" }),
          entry({ eventId: "e1", stage: "processed", at: now - 12, topic: "kept", outcome: "acked" }),
          entry({ eventId: "hidden", stage: "received", at: now, topic: "secret" })
        ])
        const timeline = yield* log.timeline("e1")
        expect(timeline.map((e) => e.stage)).toEqual(["received", "published", "processed"])
        // Sensitive detail keys are gone; the rest stays.
        expect(timeline[0]!.detail).toEqual({ verification: "valid" })
        // The kept topic's message survives with its bytes; the other topic's was dropped.
        expect(new TextDecoder().decode(timeline[1]!.message!.payload)).toBe("one")
        expect(timeline[1]!.message!.headers).toEqual({ a: "1" })
        expect((yield* log.timeline("e2"))[0]!.message).toBeUndefined()
        expect(yield* log.timeline("hidden")).toEqual([])
        expect((yield* log.caused(["e1"])).map((e) => e.eventId)).toEqual(["e2", "e2"])
        const story = yield* Port.story("e1")
        expect(story.map((e) => `${e.eventId}:${e.stage}`)).toEqual([
          "e1:received", "e1:published", "e2:published", "e1:processed", "e2:processed", "e3:dead-lettered"
        ])
        // Paging by position.
        const first = yield* log.query({ since: now - day, limit: 2 })
        const rest = yield* log.query({ since: now - day, after: first[1]!.position })
        expect([...first, ...rest].map((p) => p.entry.eventId)).toEqual(["e1", "e1", "e2", "e2", "e3", "e1"])
        expect((yield* log.query({ stage: "published", topic: "kept" })).map((p) => p.entry.eventId)).toEqual(["e1"])
        // Retention: the entry three days old goes, the recent ones stay.
        expect(yield* log.cleanup(2 * day)).toBe(1)
        expect(yield* log.timeline("old")).toEqual([])
        expect(yield* log.timeline("e1")).toHaveLength(3)
      }).pipe(Effect.provide(layer())))
  })

contract("memory", () => MemoryAuditLog.layer(options))
contract("sql (PGlite)", () =>
  SqlAuditLog.layer({ ...options, table: `bulwark_audit_t${Date.now().toString(36)}` }).pipe(
    Layer.provide(Database.layerPglite())
  ))

const postgresUrl = process.env["BULWARK_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
contract("sql (PostgreSQL)", () => {
  const table = `bulwark_audit_t${Date.now().toString(36)}`
  // The table goes when the test ends: the server is shared.
  const dropped = Layer.scopedDiscard(Effect.addFinalizer(() => Effect.orDie(SqlAuditLog.drop(table))))
  return SqlAuditLog.layer({ ...options, table }).pipe(
    Layer.provideMerge(dropped),
    Layer.provide(Database.layerPostgres({ url: postgresUrl }))
  )
})

const Payment = Schema.Struct({ n: Schema.Number })

describe("the packages write to the audit log", () => {
  it.live("transport publish, pipeline processed and dead-lettered, with causation; nothing is required when absent", () =>
    Effect.gen(function*() {
      const log = yield* MemoryAuditLog.make({ keepMessages: true })
      const run = Effect.gen(function*() {
        const good = yield* Envelope.make({ id: "good", type: "t", source: "/t", subject: "a", data: { n: 1 } })
        const bad = yield* Envelope.make({ id: "bad", type: "t", source: "/t", subject: "b", data: { n: -1 } })
        const child = yield* Envelope.make({ id: "child", type: "t", source: "/t", subject: "a", data: { n: 2 }, headers: Envelope.causedBy(good) })
        yield* Transport.publishEnvelopes(Payment)("payments", [good, bad])
        const handled = new Set<string>()
        const consumer = yield* Transport.consume("payments", (e: Envelope.Envelope<{ readonly n: number }>) =>
          e.data.n < 0
            ? Effect.fail(new Failure.PermanentError({ message: "negative", category: "schema" }))
            : Effect.sync(() => handled.add(e.id)), { schema: Payment, group: "ledger" }).pipe(Effect.fork)
        yield* Effect.sleep("20 millis").pipe(
          Effect.repeat({ until: () => log.entries().filter((p) => p.entry.component === "pipeline").length >= 2 }),
          Effect.zipRight(log.flush),
          Effect.repeat({ until: () => log.entries().filter((p) => p.entry.component === "pipeline").length >= 2 }),
          Effect.timeout("10 seconds")
        )
        // Published with its headers (as the outbox relay does), so the causation travels.
        const encoded = yield* Envelope.encode(Payment)(child)
        yield* Effect.flatMap(Transport.Publisher, (publisher) =>
          publisher.publish("shipping", [{ id: child.id, key: child.subject, payload: encoded, headers: child.headers }]))
        yield* Fiber.interrupt(consumer)
      }).pipe(Effect.provide(MemoryTransport.layer()), Effect.provideService(Port.AuditLog, log))
      yield* run
      const good = yield* log.timeline("good")
      expect(good.map((e) => `${e.component}:${e.stage}:${e.outcome}`)).toEqual([
        "transport:published:accepted",
        "pipeline:processed:acked"
      ])
      expect(good[1]!.detail).toEqual({ group: "ledger" })
      expect(good[1]!.durationMs).toBeGreaterThanOrEqual(0)
      const bad = yield* log.timeline("bad")
      expect(bad.map((e) => e.stage)).toEqual(["published", "dead-lettered"])
      expect(bad[1]!.category).toBe("schema")
      const story = yield* Port.story("good").pipe(Effect.provideService(Port.AuditLog, log))
      expect(story.map((e) => `${e.eventId}:${e.stage}`)).toContain("child:published")
      // Without an audit log, the same publish needs nothing more and writes nowhere.
      yield* Transport.publishEnvelopes(Payment)("payments", [yield* Envelope.make({ type: "t", source: "/t", subject: "c", data: { n: 3 } })]).pipe(
        Effect.provide(MemoryTransport.layer())
      )
    }).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.None)))
})

describe("History", () => {
  it.live("replays a period to a topic once per event, with the original ids, rate-limited, with progress", () =>
    Effect.gen(function*() {
      const log = yield* MemoryAuditLog.make({ keepMessages: ["orders"] })
      const now = yield* Clock.currentTimeMillis
      const published = (id: string, at: number, topic = "orders") =>
        new Port.Entry({ eventId: id, stage: "published", at, component: "transport", topic, message: { key: id, payload: bytes(id), headers: { h: id } } })
      yield* log.write([
        published("before", now - 10_000),
        published("o1", now - 500),
        published("o2", now - 400),
        published("o1", now - 300), // a second publish of the same event (a relay retry)
        published("x1", now - 200, "audit-only"), // its message was not kept
        published("o3", now - 100)
      ])
      const transport = yield* MemoryTransport.make()
      const seen: Array<string> = []
      const progress: Array<number> = []
      const consumer = yield* transport.subscribe("rebuilt").pipe(
        Stream.tap((delivery) => Effect.zipRight(Effect.sync(() => seen.push(delivery.message.id)), delivery.ack)),
        Stream.runDrain,
        Effect.fork
      )
      const started = Date.now()
      const result = yield* History.replay({
        since: now - 1000,
        to: "rebuilt",
        rate: 20,
        pageSize: 2,
        onProgress: (p) => Effect.sync(() => progress.push(p.scanned))
      }).pipe(Effect.provideService(Port.AuditLog, log), Effect.provideService(Transport.Publisher, transport))
      const elapsed = Date.now() - started
      expect(result).toMatchObject({ scanned: 5, handled: 3, duplicates: 1, withoutMessage: 1 })
      // 20 per second: three messages are at least two spacings of 50 ms apart.
      expect(elapsed).toBeGreaterThanOrEqual(100)
      expect(progress.length).toBeGreaterThanOrEqual(2)
      expect(progress.at(-1)).toBe(5)
      yield* Effect.sleep("20 millis").pipe(Effect.repeat({ until: () => seen.length >= 3 }), Effect.timeout("5 seconds"))
      expect(seen.sort()).toEqual(["o1", "o2", "o3"])
      yield* Fiber.interrupt(consumer)
    }).pipe(Effect.scoped))
})

describe("SQL audit log partitions", () => {
  it.live("one partition per day, dropped whole by retention", () =>
    Effect.gen(function*() {
      const table = `bulwark_audit_p${Date.now().toString(36)}`
      const sql = yield* SqlClient.SqlClient
      const partitions = sql<{ name: string }>`SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ${table} ORDER BY 1`
      const now = yield* Clock.currentTimeMillis
      yield* Effect.scoped(Effect.gen(function*() {
        const log = yield* SqlAuditLog.make({ table })
        yield* log.write([0, 1, 1, 2].map((ago, i) => new Port.Entry({ eventId: `e${i}`, stage: "received", at: now - ago * day, component: "test" })))
        yield* log.flush
        expect((yield* partitions).length).toBe(3)
        expect(yield* log.cleanup(day + 1)).toBe(1)
        expect((yield* partitions).length).toBe(2)
      }))
      yield* SqlAuditLog.drop(table)
    }).pipe(Effect.provide(Database.layerPglite())))
})

describe("webhook ingress writes received entries", () => {
  it.scoped("accepted, duplicate and rejected requests, with the verification result and status", () =>
    Effect.gen(function*() {
      const log = yield* MemoryAuditLog.make()
      const secret = Signing.generateSecret()
      const body = new TextEncoder().encode(JSON.stringify({ amount: 42 }))
      const headers = { ...(yield* Signing.standard([secret], { id: "msg_1", body })) }
      const process = Ingress.process({
        verifier: Verifier.standard([secret], { source: "billing" }),
        schema: Schema.Struct({ amount: Schema.Number }),
        topic: "billing.events",
        type: "invoice.paid",
        subject: () => "cus_1"
      })
      yield* Effect.gen(function*() {
        yield* process({ headers, body })
        yield* process({ headers, body })
        yield* Effect.either(process({ headers: { ...headers, "webhook-signature": "v1,AAAA" }, body }))
      }).pipe(
        Effect.provideService(Port.AuditLog, log),
        Effect.provide(Layer.merge(Layer.succeed(Transport.Publisher, { publish: () => Effect.void }), ReplayGuard.layerMemory()))
      )
      yield* log.flush
      expect(log.entries().map((p) => [p.entry.eventId, p.entry.stage, p.entry.outcome, p.entry.detail])).toEqual([
        ["msg_1", "received", "accepted", { verification: "valid", status: 202 }],
        ["msg_1", "received", "duplicate", { verification: "valid", status: 200 }],
        ["(unidentified)", "received", "rejected", { verification: "invalid", status: 401, reason: "NoMatchingSignature" }]
      ])
    }))
})

describe("the batching writer", () => {
  it.live("flush waits for a batch already on its way to storage; closing the scope stores what is buffered", () =>
    Effect.gen(function*() {
      const stored: Array<string> = []
      // A slow store: the background fiber is still writing its batch when `flush` is called.
      const store = (batch: ReadonlyArray<Port.Entry>) =>
        Effect.zipRight(Effect.sleep("150 millis"), Effect.sync(() => stored.push(...batch.map((e) => e.eventId))))
      const entry = (id: string) => new Port.Entry({ eventId: id, stage: "published", at: 0, component: "test" })
      yield* Effect.scoped(Effect.gen(function*() {
        const writer = yield* makeWriter("test", { flushInterval: "1 millis", maxBatch: 3 }, store)
        yield* writer.write(["a", "b"].map(entry))
        // The background fiber has taken both off the buffer and is storing them.
        yield* Effect.sleep("30 millis")
        yield* writer.flush
        expect(stored).toEqual(["a", "b"])
        // More than a batch: stored in batches of 3, in order.
        yield* writer.write(["c", "d", "e", "f", "g"].map(entry))
        yield* writer.flush
        expect(stored).toEqual(["a", "b", "c", "d", "e", "f", "g"])
        // Left buffered when the scope closes.
        yield* writer.write([entry("h")])
      }))
      expect(stored).toEqual(["a", "b", "c", "d", "e", "f", "g", "h"])
    }))
})
