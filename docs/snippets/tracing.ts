import { Envelope, Handler, Telemetry } from "@bulwark/core"
import { Breaker } from "@bulwark/circuit-breaker"
import { DeadLetter, SqlDeadLetterStore } from "@bulwark/dead-letter"
import { Idempotent, SqlIdempotencyStore } from "@bulwark/idempotency"
import { Outbox, Relay } from "@bulwark/outbox"
import { Retry } from "@bulwark/retry"
import { Database } from "@bulwark/sql"
import { Redaction } from "@bulwark/tracing"
import * as Otel from "@bulwark/tracing/Otel"
import { Memory, Transport } from "@bulwark/transport"
import { Ingress, ReplayGuard, Verifier } from "@bulwark/webhook"
import * as SqlClient from "@effect/sql/SqlClient"
import { tracing } from "@opentelemetry/sdk-node"
import { Effect, Layer, pipe, Schema } from "effect"

const OrderPaid = Schema.Struct({ orderId: Schema.String, amountCents: Schema.Int })
const ShipmentRequested = Schema.Struct({ orderId: Schema.String })
const appendShipment = Outbox.append(ShipmentRequested)

declare const secrets: ReadonlyArray<string> // the provider's signing secrets
declare const reserveStock: (orderId: string) => Effect.Effect<void, { readonly status: number }>

/** Where spans and metrics go: the Node SDK configured by the OTEL_* variables (nothing at all without them). */
export const TelemetryLive = Layer.mergeAll(
  Otel.layerConfig({ serviceName: "shipping" }), // OTEL_SERVICE_NAME wins over this
  Redaction.layerLogger,
  Redaction.layerSensitiveKeys(["iban"]) // masked in logs and in the span events made of logs
)

/** The ports as they are: every Bulwark package already emits its own spans and metrics. */
export const AppLive = Relay.layer().pipe(
  Layer.provideMerge(Layer.mergeAll(
    Memory.layer(),
    Outbox.layer(),
    SqlIdempotencyStore.layer(),
    SqlDeadLetterStore.layer(),
    ReplayGuard.layerMemory()
  )),
  Layer.provideMerge(Database.layerConfig()),
  Layer.provideMerge(TelemetryLive)
)

/** Webhook ingress: a `webhook.receive` server span around verify → decode → dedupe → publish. */
export const route = Ingress.route("/webhooks/payments", {
  verifier: Verifier.standard(secrets, { source: "payments" }),
  schema: OrderPaid,
  topic: "orders.paid",
  type: "com.example.order.paid",
  subject: (paid: typeof OrderPaid.Type) => paid.orderId
})

/** The follow-up event keeps the correlation id; the outbox row keeps the current span's context. */
const requestShipment: Handler.Handler<typeof OrderPaid.Type, unknown, SqlClient.SqlClient | Outbox.Outbox> = (
  paid
) =>
  Effect.gen(function*() {
    yield* reserveStock(paid.data.orderId).pipe(Telemetry.withSafeSpan("warehouse.reserve")) // your own span
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

/** No tracing stage: the pipeline's `process` span is around every delivery already. */
export const consumer = Effect.gen(function*() {
  const breaker = yield* Breaker.make("warehouse")
  const handler = pipe(
    requestShipment,
    Handler.timeout("5 seconds"),
    Breaker.middleware(breaker),
    Retry.middleware(Retry.policy({ maxAttempts: 3 })),
    Idempotent.idempotent()
  )
  return yield* Transport.consume("orders.paid", handler, { schema: OrderPaid, group: "shipping" })
})

export const main = Effect.all([consumer, DeadLetter.drain("orders.paid")], { concurrency: "unbounded" }).pipe(
  Effect.provide(AppLive)
)

/** Tests: spans in memory. The layer shuts its processor down on release, so make one per test. */
export const makeTestTelemetry = () => {
  const exporter = new tracing.InMemorySpanExporter()
  const processor = new tracing.SimpleSpanProcessor(exporter)
  const layer = Otel.layer({ serviceName: "shipping-test", spanProcessors: [processor], metricExporters: [] })
  // After the program: `await processor.forceFlush()`, then read `exporter.getFinishedSpans()`.
  return { exporter, processor, layer }
}
