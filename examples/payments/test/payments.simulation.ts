/**
 * The payments example under the simulator: the example's own consumers — `paymentsHandler` and
 * `shippingHandler` with their real idempotency, timeout, breaker and retry middleware, run by the real
 * `Pipeline` — take their transport, database and shipping API from the simulated world, which injects
 * drops, duplicates, delays, reorderings, crashes at every protocol step, partial publishes, outages, slow
 * answers, clock skew, forged and replayed webhooks, all in virtual time.
 *
 * The adapters below translate between the world's models and the example's ports; they are the only code
 * here that is not the example's. Run it by hand with
 * `npm run bulwark -- simulate examples/payments/test/payments.simulation.ts --runs 200`.
 */
import { Envelope } from "@bulwark/core"
import { IdempotencyStore, MemoryIdempotencyStore } from "@bulwark/idempotency"
import { Invariant, Scheduler, Simulation, World } from "@bulwark/simulator"
import { Transport } from "@bulwark/transport"
import { Duration, Effect, Layer, Schema } from "effect"
import { consumeOrderPaid, consumePayments, makeShippingBreaker } from "../src/Consumers.js"
import { AcmePayment, OrderPaid, orderPaidFields, orderPaidTopic, type Payment, PaymentWebhook, paymentsTopic } from "../src/Domain.js"
import { Orders } from "../src/Orders.js"
import { ShippingApi, ShippingError } from "../src/Shipping.js"
import { Tally } from "../src/Tally.js"

/** The simulated provider's body: `ref` names the message in the world's history, `key` orders it. */
const SimulatedBody = Schema.parseJson(Schema.Struct({
  ref: Schema.String,
  key: Schema.String,
  amount: Schema.Number,
  poison: Schema.Boolean
}))
const decodeBody = Schema.decodeUnknownEither(SimulatedBody)
const encodePayment = Envelope.encode(PaymentWebhook)
const encodeOrderPaid = Envelope.encode(OrderPaid)
const textDecoder = new TextDecoder()
const textEncoder = new TextEncoder()

/**
 * The world finds a message's `ref` at `data.ref` of the CloudEvent; the example's schemas ignore the extra
 * field when they decode, so it rides along without changing what the consumers see.
 */
const withRef = (payload: Uint8Array, ref: string): Uint8Array => {
  const event = JSON.parse(textDecoder.decode(payload)) as { data: Record<string, unknown> }
  return textEncoder.encode(JSON.stringify({ ...event, data: { ...event.data, ref } }))
}

/** Builds the example's pipeline inside the world and answers its webhook receiver. */
export const pipeline = (world: World.World) => {
  const tolerance = world.history.policy.webhookTolerance

  // The ingress: the world's HMAC scheme instead of Standard Webhooks, then the same persist-before-ack.
  const ingress: World.Ingress = (request) =>
    Effect.gen(function*() {
      if (!world.verify(request, world.wallNow(Scheduler.epoch), tolerance)) return 401
      const body = decodeBody(textDecoder.decode(request.body))
      if (body._tag === "Left") return 400
      const { ref, key, amount } = body.right
      const data: AcmePayment = {
        type: "payment.succeeded",
        data: { paymentId: ref, orderId: `ord_${ref}`, customerId: key, amount: Math.max(1, Math.round(amount)), currency: "EUR" }
      }
      const envelope = yield* Envelope.make({ type: "com.acmepay.payment.succeeded", source: "/webhooks/acmepay", subject: key, data })
      const payload = withRef(yield* encodePayment(envelope), ref)
      const published = yield* Effect.either(world.publisher.publish(paymentsTopic, [{ id: envelope.id, key, payload, headers: {} }]))
      return published._tag === "Right" ? 202 : 503
    }).pipe(Effect.orDie)

  // The order service: the order row's pending→paid guard is the world's claim, in the same transaction as
  // the effect and the outbox row.
  const orders: Orders["Type"] = {
    markPaid: (payment: Payment, cause) =>
      world.transaction((tx) =>
        Effect.gen(function*() {
          yield* world.crashPoint("before-effect", cause.id, payment.paymentId)
          if (!tx.claim(`order:${payment.orderId}`)) return { _tag: "AlreadyPaid" } as const
          yield* world.crashPoint("between-dedupe-and-effect", cause.id, payment.paymentId)
          tx.effect("orders", payment.paymentId)
          tx.emit({ ref: payment.paymentId, key: payment.customerId, payload: payment })
          return { _tag: "Paid", sequence: -1 } as const
        }), payment.paymentId).pipe(
        Effect.tap(() => world.crashPoint("after-commit-before-publish", cause.id, payment.paymentId))
      )
  }

  // The outbox relay: commit order, a stable event id per row (so a re-published row is the same event).
  const relay = Effect.forever(
    Effect.gen(function*() {
      yield* Effect.sleep(Duration.millis(50))
      const rows = world.unpublished(10)
      if (rows.length === 0) return
      const messages: Array<Transport.OutgoingMessage> = []
      for (const row of rows) {
        const payment = row.payload as Payment
        const envelope = yield* Envelope.make({ id: row.id, ...orderPaidFields(payment, row.order) })
        messages.push({ id: row.id, key: row.key, payload: withRef(yield* encodeOrderPaid(envelope), row.ref), headers: { "outbox-row": row.id } })
      }
      yield* world.publisher.publish(orderPaidTopic, messages)
      yield* world.crashPoint("inside-relay-batch")
      yield* world.markPublished(rows)
    }).pipe(Effect.catchAllCause(() => Effect.void))
  )

  // The shipping API: the world's downstream, which honours the idempotency key like the real one.
  const shipping: ShippingApi["Type"] = {
    createShipment: (request) =>
      world.callDownstream({
        ref: request.paymentId,
        key: request.customerId,
        order: request.sequence,
        idempotencyKey: request.idempotencyKey,
        attempt: 1
      }).pipe(
        Effect.mapError((error) => new ShippingError({ status: error.status, orderId: request.orderId })),
        Effect.as({ shipmentId: `shp_${request.idempotencyKey}`, orderId: request.orderId })
      )
  }

  const services = Layer.mergeAll(
    world.layer,
    Layer.succeed(Orders, orders),
    Layer.succeed(ShippingApi, shipping),
    Tally.layer
  )
  return Effect.gen(function*() {
    const breaker = yield* makeShippingBreaker
    // Two competing consumers per topic, sharing one key store per topic as they would share a database.
    const paymentKeys = yield* MemoryIdempotencyStore.make()
    const shipmentKeys = yield* MemoryIdempotencyStore.make()
    for (let i = 0; i < 2; i++) {
      yield* Effect.forkScoped(Effect.provideService(consumePayments, IdempotencyStore.IdempotencyStore, paymentKeys))
      yield* Effect.forkScoped(Effect.provideService(consumeOrderPaid(breaker), IdempotencyStore.IdempotencyStore, shipmentKeys))
    }
    yield* Effect.forkScoped(relay)
    return ingress
  }).pipe(Effect.orDie, Effect.provide(services))
}

/** Nothing lost, every effect once (orders and shipments), order per customer, and the rest of `Invariant.all`. */
export const simulation = Simulation.make({
  name: "payments example",
  pipeline,
  // The payments pipeline allows 10 deliveries before it dead-letters.
  policy: { maxDeliveries: 10 },
  invariants: Invariant.all
})
