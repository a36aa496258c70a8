/**
 * The payments example under the simulator, unchanged: the example's own AcmePay receiver (`Webhooks.acmePay`
 * through `Ingress.process`), its consumers — `paymentsHandler` and `shippingHandler` with their real
 * idempotency, timeout, breaker and retry middleware, run by the real `Pipeline` — the real outbox relay, and
 * the dead-letter drain and replay, all on the world's ports and virtual clock, under drops, duplicates,
 * delays, reorderings, crashes of any process at any step, partial publishes, outages, slow answers, clock
 * skew, forged and replayed webhooks.
 *
 * What is the world's, not the example's: the order service's storage (a durable table written in the
 * outbox's transaction, instead of SQL) and the shipping API (the world's downstream, which honours the
 * idempotency key like the real one). Run it by hand with
 * `npm run bulwark -- simulate examples/payments/test/payments.simulation.ts --runs 200`.
 */
import { DeadLetter, Replay } from "@bulwark/dead-letter"
import { Outbox, Relay } from "@bulwark/outbox"
import * as MemoryOutboxStore from "@bulwark/outbox/OutboxStore/Memory"
import { Invariant, Simulation, type World } from "@bulwark/simulator"
import { Effect, Layer } from "effect"
import { consumeOrderPaid, consumePayments, makeShippingBreaker } from "../src/Consumers.js"
import { OrderPaid, orderPaidEvent, orderPaidTopic, type Payment, paymentsTopic } from "../src/Domain.js"
import { type MarkPaid, Orders, OrderStoreError } from "../src/Orders.js"
import { ShippingApi, ShippingError } from "../src/Shipping.js"
import { Tally } from "../src/Tally.js"
import { acmePay } from "../src/Webhooks.js"
import { Ingress } from "@bulwark/webhook"

const appendOrderPaid = Outbox.append(OrderPaid)

/** Builds the example inside the world and answers its AcmePay receiver. */
export const pipeline = (world: World.World) => {
  const receive = Ingress.process(acmePay({ acmepay: [world.secret], stripe: [] }))
  const ingress: World.Ingress = (request) => Effect.map(Effect.exit(receive(request)), (exit) => Ingress.answer(exit).status)

  // The order service: the order's pending→paid guard and the `OrderPaid` row commit in one transaction.
  const paid = world.table<number>("orders")
  const orders: Orders["Type"] = {
    markPaid: (payment: Payment, cause) =>
      MemoryOutboxStore.transaction(Effect.gen(function*() {
        if (paid.has(payment.orderId)) return { _tag: "AlreadyPaid" } as MarkPaid
        const sequence = paid.size + 1
        const event = yield* orderPaidEvent(payment, sequence, cause)
        yield* MemoryOutboxStore.onCommit(() => {
          paid.set(payment.orderId, sequence)
          world.history.effect("orders", payment.paymentId)
        })
        yield* appendOrderPaid(orderPaidTopic, [event])
        return { _tag: "Paid", sequence } as MarkPaid
      })).pipe(
        Effect.mapError((cause) => new OrderStoreError({ cause })),
        Effect.provide(world.context)
      )
  }

  // The shipping API: the world's downstream, which honours the idempotency key like the real one.
  const shipping: ShippingApi["Type"] = {
    createShipment: (request) =>
      world.callDownstream({
        ref: request.paymentId,
        key: request.customerId,
        order: world.orderOf(orderPaidTopic, request.idempotencyKey),
        idempotencyKey: request.idempotencyKey
      }).pipe(
        Effect.mapError((error) => new ShippingError({ status: error.status, orderId: request.orderId })),
        Effect.as({ shipmentId: `shp_${request.idempotencyKey}`, orderId: request.orderId })
      )
  }

  const services = Layer.mergeAll(
    Layer.succeedContext(world.context),
    Layer.succeed(Orders, orders),
    Layer.succeed(ShippingApi, shipping),
    Tally.layer
  )
  // What the example's replay step does after an outage: dependency failures go back, poison stays.
  const replayer = Effect.forever(Effect.zipRight(
    Effect.sleep("5 seconds"),
    Effect.forEach(["dependency", "timeout"] as const, (category) =>
      Effect.ignore(Replay.replay({ filter: { category }, rate: 50 })), { discard: true })
  ))
  return Effect.gen(function*() {
    for (let i = 0; i < 2; i++) {
      yield* world.spawn(`orders-${i + 1}`, Effect.provide(consumePayments, services))
      // Each shipping process has its own breaker, as each process of the example does.
      yield* world.spawn(`shipping-${i + 1}`, Effect.provide(Effect.flatMap(makeShippingBreaker, consumeOrderPaid), services))
    }
    yield* world.spawn("relay", Effect.provide(Relay.run({ batchSize: 50, pollInterval: "1 second" }), services))
    yield* world.spawn("drain-payments", Effect.provide(DeadLetter.drain(paymentsTopic), services))
    yield* world.spawn("drain-order-paid", Effect.provide(DeadLetter.drain(orderPaidTopic), services))
    yield* world.spawn("replayer", Effect.provide(replayer, services))
    return ingress
  })
}

/** Nothing lost, every effect once (orders and shipments), order per customer, and the rest of `Invariant.all`. */
export const simulation = Simulation.make({
  name: "payments example",
  pipeline,
  // AcmePay's body, with the workload's ref as the payment id (so every event of a payment names it).
  body: (item, ref) => ({
    type: "payment.succeeded",
    data: { paymentId: ref, orderId: `ord_${ref}`, customerId: `k${item.key}`, amount: item.amount, currency: "EUR" }
  }),
  // The payments pipeline allows 10 deliveries before it dead-letters; the shipping retry makes 6 attempts.
  // AcmePay's receiver uses Standard Webhooks' 5-minute timestamp tolerance. Each of the two shipping
  // processes has its own breaker, which judges after 10 calls while up to 16 run at once: a failing API can
  // see about 2 × (10 + 16) calls before both open.
  policy: { maxDeliveries: 10, maxCallAttempts: 6, webhookTolerance: 300_000, maxFailingCallsPerSecond: 60 },
  invariants: Invariant.all
})
