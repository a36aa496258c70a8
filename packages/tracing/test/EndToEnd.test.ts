import { Envelope, Handler, Pipeline } from "@bulwark/core"
import * as Idempotent from "@bulwark/idempotency/Idempotent"
import * as MemoryIdempotencyStore from "@bulwark/idempotency/IdempotencyStore/Memory"
import * as Outbox from "@bulwark/outbox/Outbox"
import * as Relay from "@bulwark/outbox/Relay"
import * as Retry from "@bulwark/retry/Retry"
import { Database } from "@bulwark/sql"
import * as Memory from "@bulwark/transport/Transport/Memory"
import * as Transport from "@bulwark/transport/Transport"
import * as ReplayGuard from "@bulwark/webhook/ReplayGuard"
import * as Signing from "@bulwark/webhook/Signing"
import * as Verifier from "@bulwark/webhook/Verifier"
import { describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { tracing } from "@opentelemetry/sdk-node"
import { Data, Effect, Layer, Metric, Option, pipe, Schedule, Schema, Stream } from "effect"
import * as Metrics from "../src/Metrics.js"
import * as Otel from "../src/Otel.js"
import * as Propagation from "../src/Propagation.js"
import * as Tracing from "../src/Tracing.js"

const Payment = Schema.Struct({ id: Schema.String, amount: Schema.Number, cardToken: Schema.String })
const Receipt = Schema.Struct({ paymentId: Schema.String, amount: Schema.Number })

class Unavailable extends Data.TaggedError("Unavailable")<{ readonly status: 503 }> {}


const TransportLive = Layer.merge(
  Tracing.layerPublisher({ system: "memory" }),
  Tracing.layerSubscriber({ system: "memory" })
).pipe(Layer.provide(Memory.layer()))

const DatabaseLive = Database.layerPglite()

const OutboxLive = Tracing.layerOutbox({ system: "memory" }).pipe(
  Layer.provide(Outbox.layer({ table: "tracing_outbox" })),
  Layer.provideMerge(DatabaseLive)
)

const IdempotencyLive = Tracing.layerIdempotencyStore.pipe(Layer.provide(MemoryIdempotencyStore.layer()))

// The SDK shuts its processors down with the layer, so every test gets fresh ones.
const exporter = new tracing.InMemorySpanExporter()
let processor = new tracing.SimpleSpanProcessor(exporter)

const telemetry = <A, E, R>(layer: Layer.Layer<A, E, R>) =>
  Layer.unwrapEffect(Effect.sync(() => {
    exporter.reset()
    processor = new tracing.SimpleSpanProcessor(exporter)
    // A shut-down in-memory exporter drops spans; the previous test's SDK shut this one down.
    ;(exporter as unknown as { _stopped: boolean })._stopped = false
    return layer.pipe(
      Layer.provideMerge(Otel.layer({ serviceName: "bulwark-e2e", spanProcessors: [processor], metricExporters: [] }))
    )
  }))

const AppLive = telemetry(Layer.mergeAll(TransportLive, OutboxLive, IdempotencyLive, ReplayGuard.layerMemory()))
// The smaller tests need no database (starting PGlite is the slow part).
const LightLive = telemetry(IdempotencyLive)

type Span = tracing.ReadableSpan

const secret = Signing.generateSecret()
const cardToken = "tok_VERY_SENSITIVE_4242"

describe("one event, end to end", () => {
  it.live("webhook → queue → worker → outbox → relay → consumer is one trace", () =>
    Effect.gen(function*() {
      exporter.reset()

      // --- webhook: a signed request is verified and persisted on the `payments` topic.
      const body = new TextEncoder().encode(JSON.stringify({ id: "pay_1", amount: 4200, cardToken }))
      const signed = yield* Signing.standard([secret], { body, id: "evt_1" })
      const receive = Tracing.ingress({
        verifier: Verifier.standard([secret], { source: "acme" }),
        schema: Payment,
        topic: "payments",
        type: "com.acme.payment.succeeded",
        subject: (payment) => payment.id
      })
      const accepted = yield* receive({ headers: { ...signed, "content-type": "application/json" }, body })
      expect(accepted).toEqual({ id: "evt_1", duplicate: false })

      // --- worker: fails once (transient), then writes a receipt to the outbox in a transaction.
      let calls = 0
      const worker: Handler.Handler<typeof Payment.Type, Unavailable | unknown, SqlClient.SqlClient | Outbox.Outbox> = (
        envelope
      ) =>
        Effect.gen(function*() {
          calls++
          if (calls === 1) return yield* new Unavailable({ status: 503 })
          const sql = yield* SqlClient.SqlClient
          const receipt = yield* Envelope.make({
            type: "com.acme.receipt.issued",
            source: "/worker",
            subject: envelope.subject,
            data: { paymentId: envelope.data.id, amount: envelope.data.amount },
            headers: Envelope.causedBy(envelope)
          })
          yield* sql.withTransaction(Outbox.append(Receipt)("receipts", [receipt]))
        })
      const workerHandler = pipe(
        worker,
        Retry.middleware(Retry.policy({ schedule: Schedule.spaced("1 millis"), maxAttempts: 3 })),
        Idempotent.idempotent(),
        Tracing.middleware({ destination: "payments", system: "memory", group: "workers" })
      )
      const subscriber = yield* Transport.Subscriber
      const workerStats = yield* Pipeline.run(
        subscriber.subscribe("payments", { group: "workers" }).pipe(Stream.take(1)),
        workerHandler,
        { schema: Payment }
      )
      expect(workerStats.acked).toBe(1)

      // --- relay: one round publishes the outbox row.
      const relay = yield* Relay.make({ relayId: "relay-test" })
      const round = yield* relay.round
      expect(round.published).toBe(1)

      // --- consumer of the receipts.
      const seen: Array<Envelope.Envelope<typeof Receipt.Type>> = []
      const consumer = pipe(
        (envelope: Envelope.Envelope<typeof Receipt.Type>) => Effect.sync(() => void seen.push(envelope)),
        Tracing.middleware({ destination: "receipts", system: "memory" })
      )
      const consumerStats = yield* Pipeline.run(subscriber.subscribe("receipts").pipe(Stream.take(1)), consumer, {
        schema: Receipt
      })
      expect(consumerStats.acked).toBe(1)
      expect(seen[0]!.headers["correlation-id"]).toBe("evt_1")
      expect(seen[0]!.headers["causation-id"]).toBe("evt_1")

      yield* Effect.promise(() => processor.forceFlush())
      const spans = exporter.getFinishedSpans()

      // --- one trace for the event (the relay's own bookkeeping queries are not part of it)
      const eventSpans = spans.filter((s) => !s.name.startsWith("sql.") || s.attributes["bulwark.correlation_id"] === "evt_1")
      const traceIds = new Set(eventSpans.map((s) => s.spanContext().traceId))
      expect(traceIds.size).toBe(1)

      const byName = (name: string): Span => {
        const found = spans.filter((s) => s.name === name)
        expect(found.map((s) => s.name), `span ${name}`).toEqual([name])
        return found[0]!
      }
      const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]))
      const parentOf = (span: Span): Span | undefined => {
        const id = span.parentSpanContext?.spanId
        return id === undefined ? undefined : byId.get(id)
      }
      const isAncestor = (ancestor: Span, span: Span): boolean => {
        for (let p = parentOf(span); p !== undefined; p = parentOf(p)) if (p === ancestor) return true
        return false
      }

      const webhook = byName("webhook.receive acme")
      const verify = byName("webhook.verify")
      const sendPayments = byName("send payments")
      const receivePayments = byName("receive payments")
      const processPayments = byName("process payments")
      const claim = byName("idempotency.claim")
      const attempts = spans.filter((s) => s.name === "bulwark.retry.attempt")
      const create = byName("create receipts")
      const sendReceipts = byName("send receipts")
      const receiveReceipts = byName("receive receipts")
      const processReceipts = byName("process receipts")
      const acks = spans.filter((s) => s.name.startsWith("ack "))

      // --- structure: each stage is the child of the one that caused it.
      expect(parentOf(webhook)).toBeUndefined()
      expect(parentOf(verify)).toBe(webhook)
      expect(parentOf(sendPayments)).toBe(webhook)
      expect(parentOf(receivePayments)).toBe(sendPayments)
      expect(parentOf(processPayments)).toBe(sendPayments)
      expect(parentOf(claim)).toBe(processPayments)
      expect(attempts).toHaveLength(2)
      for (const attempt of attempts) expect(parentOf(attempt)).toBe(processPayments)
      // The append runs in the second attempt, inside the worker's SQL transaction.
      const second = attempts.find((a) => a.attributes["bulwark.retry.attempt"] === 2)!
      expect(parentOf(create)?.name).toBe("sql.transaction")
      expect(isAncestor(second, create)).toBe(true)
      // The relay runs outside any handler: its own queries are not parented under the worker.
      const relayQueries = spans.filter((s) => s.name === "sql.execute" && !isAncestor(processPayments, s))
      for (const query of relayQueries) expect(isAncestor(webhook, query)).toBe(false)
      expect(parentOf(sendReceipts)).toBe(create)
      expect(parentOf(receiveReceipts)).toBe(sendReceipts)
      expect(parentOf(processReceipts)).toBe(sendReceipts)
      expect(acks.map((s) => s.name).sort()).toEqual(["ack payments", "ack receipts"])
      expect(parentOf(acks.find((s) => s.name === "ack receipts")!)).toBe(sendReceipts)
      expect(isAncestor(webhook, processReceipts)).toBe(true)

      // --- kinds (OTel SpanKind: SERVER 1, PRODUCER 3, CONSUMER 4)
      expect(webhook.kind).toBe(1)
      expect([sendPayments.kind, create.kind, sendReceipts.kind]).toEqual([3, 3, 3])
      expect([processPayments.kind, processReceipts.kind, receivePayments.kind]).toEqual([4, 4, 4])

      // --- messaging attributes
      expect(sendPayments.attributes).toMatchObject({
        "messaging.system": "memory",
        "messaging.operation.type": "send",
        "messaging.destination.name": "payments",
        "messaging.message.id": "evt_1"
      })
      expect(processPayments.attributes).toMatchObject({
        "messaging.system": "memory",
        "messaging.operation.type": "process",
        "messaging.destination.name": "payments",
        "messaging.consumer.group.name": "workers",
        "messaging.message.id": "evt_1",
        "cloudevents.event_type": "com.acme.payment.succeeded",
        "bulwark.delivery.attempt": 1
      })
      expect(create.attributes).toMatchObject({
        "messaging.operation.type": "create",
        "messaging.destination.name": "receipts"
      })
      const receiptId = seen[0]!.id
      expect(processReceipts.attributes).toMatchObject({
        "messaging.operation.type": "process",
        "messaging.destination.name": "receipts",
        "messaging.message.id": receiptId,
        "bulwark.causation_id": "evt_1"
      })
      expect(claim.attributes).toMatchObject({ "bulwark.idempotency.outcome": "fresh", "bulwark.idempotency.hit": false })
      expect(webhook.attributes).toMatchObject({ "bulwark.webhook.source": "acme", "messaging.message.id": "evt_1" })
      expect(verify.attributes).toMatchObject({ "bulwark.webhook.scheme": "standard" })

      // --- the retry left its delay as a span event; the failed attempt is recorded by type only.
      const retryEvents = processPayments.events.filter((e) => e.name === "bulwark.retry")
      expect(retryEvents).toHaveLength(1)
      expect(retryEvents[0]!.attributes).toMatchObject({ "bulwark.retry.attempt": 2, "bulwark.retry.delay_ms": 1 })

      // --- correlation id on every span from the moment the event has an id.
      const correlated = eventSpans.filter((s) => s !== verify)
      for (const span of correlated) {
        expect(span.attributes["messaging.message.conversation_id"], span.name).toBe("evt_1")
        expect(span.attributes["bulwark.correlation_id"], span.name).toBe("evt_1")
      }

      // --- nothing sensitive anywhere: not the card token, not the signature, not the secret.
      const dump = JSON.stringify(spans.map((s) => ({
        attributes: s.attributes,
        events: s.events,
        links: s.links,
        status: s.status
      })))
      expect(dump).not.toContain(cardToken)
      expect(dump).not.toContain(signed["webhook-signature"])
      expect(dump).not.toContain(secret)

      // --- the trace context really rode inside the envelope.
      expect(Option.getOrThrow(Propagation.parseTraceparent(seen[0]!.headers.traceparent)).spanId)
        .toBe(sendReceipts.spanContext().spanId)

      // --- metrics
      const received = yield* Metric.value(
        Metrics.eventsReceived.pipe(Metric.tagged("stage", "consume"), Metric.tagged("destination", "receipts"))
      )
      expect(received.count).toBe(1)
      const latency = yield* Metric.value(
        Metrics.handlerDuration.pipe(Metric.tagged("destination", "payments"), Metric.tagged("outcome", "success"))
      )
      expect(latency.count).toBe(1)
      const retries = yield* Metric.value(Metrics.retries.pipe(Metric.tagged("category", "dependency")))
      expect(retries.count).toBeGreaterThanOrEqual(1)
    }).pipe(Effect.provide(AppLive)))

  it.live("a duplicate delivery is a claim hit and counts as suppressed", () =>
    Effect.gen(function*() {
      exporter.reset()
      const envelope = yield* Envelope.make({
        id: "dup_1",
        type: "t",
        source: "/s",
        subject: "k",
        data: { paymentId: "p", amount: 1 }
      })
      const handler = pipe(
        (_: Envelope.Envelope<typeof Receipt.Type>) => Effect.void,
        Idempotent.idempotent(),
        Tracing.middleware({ destination: "dups" })
      )
      const before = (yield* Metric.value(Metrics.duplicatesSuppressed)).count
      yield* handler(envelope)
      yield* handler({ ...envelope, attempt: 2 })
      yield* Effect.promise(() => processor.forceFlush())
      const claims = exporter.getFinishedSpans().filter((s) => s.name === "idempotency.claim")
      expect(claims.map((s) => s.attributes["bulwark.idempotency.hit"])).toEqual([false, true])
      expect((yield* Metric.value(Metrics.duplicatesSuppressed)).count - before).toBe(1)
    }).pipe(Effect.provide(LightLive)))

  it.live("batch consumption links every message's producer", () =>
    Effect.gen(function*() {
      exporter.reset()
      const produce = (id: string) =>
        Effect.flatMap(Propagation.currentHeaders, (headers) =>
          Envelope.make({ id, type: "t", source: "/s", subject: id, data: null, headers })).pipe(
            Effect.withSpan(`produce ${id}`, { root: true })
          )
      const a = yield* produce("a")
      const b = yield* produce("b")
      yield* Effect.void.pipe(
        Effect.withSpan("work"),
        Tracing.processBatch({ destination: "batch" }, [a, b])
      )
      yield* Effect.promise(() => processor.forceFlush())
      const spans = exporter.getFinishedSpans()
      const batch = spans.find((s) => s.name === "process batch")!
      const producers = ["produce a", "produce b"].map((n) => spans.find((s) => s.name === n)!)
      expect(batch.parentSpanContext).toBeUndefined()
      expect(batch.attributes["messaging.batch.message_count"]).toBe(2)
      expect(batch.links.map((l) => l.context.spanId).sort()).toEqual(producers.map((p) => p.spanContext().spanId).sort())
      expect(new Set(producers.map((p) => p.spanContext().traceId)).size).toBe(2)
    }).pipe(Effect.provide(LightLive)))
})
