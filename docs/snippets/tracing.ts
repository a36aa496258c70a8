import { Envelope, Handler } from "@bulwark/core"
import { Breaker } from "@bulwark/circuit-breaker"
import { DeadLetter, DeadLetterStore, SqlDeadLetterStore } from "@bulwark/dead-letter"
import { Idempotent, SqlIdempotencyStore } from "@bulwark/idempotency"
import { Outbox, Relay } from "@bulwark/outbox"
import { Retry } from "@bulwark/retry"
import { Database } from "@bulwark/sql"
import { Redaction, Tracing } from "@bulwark/tracing"
import * as Otel from "@bulwark/tracing/Otel"
import { Memory, Transport } from "@bulwark/transport"
import { Ingress, ReplayGuard, Verifier } from "@bulwark/webhook"
import * as SqlClient from "@effect/sql/SqlClient"
import { tracing } from "@opentelemetry/sdk-node"
import { Effect, Layer, pipe, Schedule, Schema } from "effect"

const OrderPaid = Schema.Struct({ orderId: Schema.String, amountCents: Schema.Int })
const ShipmentRequested = Schema.Struct({ orderId: Schema.String })
const appendShipment = Outbox.append(ShipmentRequested)

declare const secrets: ReadonlyArray<string> // the provider's signing secrets
declare const reserveStock: (orderId: string) => Effect.Effect<void, { readonly status: number }>

/** The Node SDK configured by the OTEL_* variables (nothing at all without them), and redacting loggers. */
export const TelemetryLive = Layer.mergeAll(
  Otel.layerConfig({ serviceName: "shipping" }), // OTEL_SERVICE_NAME wins over this
  Redaction.layerLogger,
  Redaction.layerSensitiveKeys(["iban"]) // masked in logs and in the span events made of logs
)

/** Each port wrapped by its traced decorator: same service in, same service out. */
const TransportLive = Layer.merge(
  Tracing.layerPublisher({ system: "memory" }), // `messaging.system`: rabbitmq, nats, redis, postgresql, …
  Tracing.layerSubscriber({ system: "memory" })
).pipe(Layer.provide(Memory.layer()))

const StoresLive = Layer.mergeAll(
  Tracing.layerOutbox().pipe(Layer.provide(Outbox.layer())),
  Tracing.layerIdempotencyStore.pipe(Layer.provide(SqlIdempotencyStore.layer())),
  Tracing.layerDeadLetterStore().pipe(Layer.provide(SqlDeadLetterStore.layer()))
).pipe(Layer.provideMerge(Database.layerConfig))

/** The relay publishes through the traced publisher, so its `send` span joins the trace of the append. */
export const AppLive = Relay.layer().pipe(
  Layer.provideMerge(Layer.mergeAll(TransportLive, StoresLive, ReplayGuard.layerMemory())),
  Layer.provideMerge(TelemetryLive)
)

/** Webhook ingress: a `webhook.receive` span around verify → decode → dedupe → publish. */
export const receive = Tracing.ingress({
  verifier: Verifier.standard(secrets, { source: "payments" }),
  schema: OrderPaid,
  topic: "orders.paid",
  type: "com.example.order.paid",
  subject: (paid) => paid.orderId
})

/** `Ingress.route` is not wrapped by `Tracing.ingress`; a traced verifier still gives it a verify span. */
export const route = Ingress.route("/webhooks/payments", {
  verifier: Tracing.traceVerifier(Verifier.standard(secrets, { source: "payments" })),
  schema: OrderPaid,
  topic: "orders.paid",
  type: "com.example.order.paid",
  subject: (paid) => paid.orderId
})

/** The follow-up event keeps the correlation id; the traced outbox writes the current span into it. */
const requestShipment: Handler.Handler<typeof OrderPaid.Type, unknown, SqlClient.SqlClient | Outbox.Outbox> = (
  paid
) =>
  Effect.gen(function*() {
    yield* reserveStock(paid.data.orderId)
    const sql = yield* SqlClient.SqlClient
    const shipment = yield* Envelope.make({
      type: "com.example.shipment.requested",
      source: "/shipping",
      subject: paid.subject,
      data: { orderId: paid.data.orderId },
      headers: Envelope.causedBy(paid)
    })
    yield* sql.withTransaction(appendShipment("shipments", [shipment]))
  })

/** `Tracing.middleware` is the `tracing` stage: applied last, it is the outermost. */
export const consumer = Effect.gen(function*() {
  const breaker = Tracing.traceBreaker(yield* Breaker.make("warehouse"))
  const dlq = yield* DeadLetterStore.DeadLetterStore // the traced store from AppLive
  const handler = pipe(
    requestShipment,
    Handler.timeout("5 seconds"),
    Breaker.middleware(breaker),
    Retry.middleware(Retry.policy({ maxAttempts: 3 })),
    Idempotent.idempotent(),
    DeadLetter.deadLetter(dlq, { topic: "orders.paid", schema: OrderPaid }),
    Tracing.middleware({ destination: "orders.paid", group: "shipping", system: "memory" })
  )
  return yield* Transport.consume("orders.paid", handler, { schema: OrderPaid, group: "shipping" })
})

/** A batch has many parents: one root `process` span with a link to each message's producer. */
export const processBatch = (batch: ReadonlyArray<Envelope.Envelope<typeof OrderPaid.Type>>) =>
  Effect.forEach(batch, (paid) => reserveStock(paid.data.orderId)).pipe(
    Tracing.processBatch({ destination: "orders.paid", group: "shipping" }, batch)
  )

/** The traced store refreshes `bulwark_dlq_depth` itself; this catches changes other processes made. */
export const dlqDepthGauge = Tracing.updateDlqDepth.pipe(
  Effect.catchAll((error) => Effect.logWarning("dead-letter depth not read", error)),
  Effect.repeat(Schedule.spaced("30 seconds"))
)

export const main = Effect.gen(function*() {
  yield* Effect.forkScoped(dlqDepthGauge)
  return yield* consumer
}).pipe(Effect.scoped, Effect.provide(AppLive))

/** Tests: spans in memory. The layer shuts its processor down on release, so make one per test. */
export const makeTestTelemetry = () => {
  const exporter = new tracing.InMemorySpanExporter()
  const processor = new tracing.SimpleSpanProcessor(exporter)
  const layer = Otel.layer({ serviceName: "shipping-test", spanProcessors: [processor], metricExporters: [] })
  // After the program: `await processor.forceFlush()`, then read `exporter.getFinishedSpans()`.
  return { exporter, processor, layer }
}
