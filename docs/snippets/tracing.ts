import { Envelope, Handler } from "@bulwark/core"
import { Effect, Schema } from "effect"

const OrderPaid = Schema.Struct({ orderId: Schema.String })
const ShipmentRequested = Schema.Struct({ orderId: Schema.String })

/**
 * An event caused by another: same `correlation-id`, `causation-id` = the cause's id, and the cause's
 * `traceparent` / `tracestate` / `bulwark-deadline` carried over.
 */
export const requestShipment = (paid: Envelope.Envelope<typeof OrderPaid.Type>) =>
  Envelope.make({
    type: "com.example.shipment.requested",
    source: "/orders",
    subject: paid.subject,
    data: { orderId: paid.data.orderId },
    headers: Envelope.causedBy(paid)
  })

/** A user middleware (no stage) that puts the ids on a span and on every log line of the handler. */
export const traced = Handler.around((effect, envelope) =>
  effect.pipe(
    Effect.withSpan("orders.handle", {
      attributes: {
        "messaging.message.id": envelope.id,
        "bulwark.correlation_id": Envelope.correlationId(envelope),
        "bulwark.envelope.attempt": envelope.attempt
      }
    }),
    Effect.annotateLogs({ correlationId: Envelope.correlationId(envelope), envelopeId: envelope.id })
  ))

/** `traceparent` rides inside the CloudEvents payload as an extension attribute. */
export const wireForm = (shipment: Envelope.Envelope<typeof ShipmentRequested.Type>) =>
  Envelope.toCloudEvent(ShipmentRequested)(shipment)
