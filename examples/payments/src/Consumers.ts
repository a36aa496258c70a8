/**
 * The two consumers and their middleware stacks. They are written against ports (`Orders`, `ShippingApi`,
 * `Transport.Subscriber`, `IdempotencyStore`), so the same code runs on PGlite or PostgreSQL, on the memory
 * transport or NATS, and inside the simulator's world.
 *
 * - **payments → orders**: idempotent per payment id (a provider may re-send one payment under a new event
 *   id); transient failures go back to the transport for a later redelivery.
 * - **order-paid → shipping**: every attempt bounded by a timeout and counted by the circuit breaker,
 *   retried with jittered backoff, idempotent per event; what retry gives up on is dead-lettered with its
 *   category by the pipeline.
 */
import { Breaker } from "@bulwark/circuit-breaker"
import * as Versioning from "@bulwark/contracts/Versioning"
import { type Envelope, Handler, Pipeline } from "@bulwark/core"
import { Idempotent } from "@bulwark/idempotency"
import { Backoff, Retry } from "@bulwark/retry"
import { Transport } from "@bulwark/transport"
import { Duration, Effect, FiberRef, pipe } from "effect"
import { globalValue } from "effect/GlobalValue"
import { orderPaidConsumer, paymentsConsumer } from "./Contracts.js"
import { type OrderPaid, orderPaidContract, paymentOf, type PaymentWebhook } from "./Domain.js"
import { Orders } from "./Orders.js"
import { ShippingApi } from "./Shipping.js"
import { bump, type Counters, type IdTable, Tally, update } from "./Tally.js"

/** Marks the order of a payment paid (the order service appends `OrderPaid` in the same transaction). */
export const markOrderPaid = (envelope: Envelope.Envelope<PaymentWebhook>) =>
  Effect.gen(function*() {
    const orders = yield* Orders
    const payment = paymentOf(envelope.data)
    const result = yield* orders.markPaid(payment, envelope)
    yield* update((c) => {
      if (result._tag === "Paid") bump(c.ordersPaid, payment.orderId)
      else c.paymentDuplicatesAbsorbed++
    })
  }).pipe(Effect.withSpan("orders.mark-paid", { attributes: { "payment.id": paymentOf(envelope.data).paymentId } }))

/** Books the parcel of a paid order; the envelope id is the API's idempotency key, stable across retries. */
export const bookShipment = (envelope: Envelope.Envelope<OrderPaid>) =>
  Effect.flatMap(ShippingApi, (api) =>
    api.createShipment({
      orderId: envelope.data.orderId,
      customerId: envelope.data.customerId,
      paymentId: envelope.data.paymentId,
      sequence: envelope.data.sequence,
      idempotencyKey: envelope.id
    })).pipe(Effect.asVoid, Effect.withSpan("shipping.book", { attributes: { "order.id": envelope.data.orderId } }))

// Per-delivery scratch state shared between an outer and an inner wrapper of one handler run.
interface RunState {
  ran: boolean
  attempts: number
}
const currentRun = globalValue(
  Symbol.for("@bulwark-examples/payments/currentRun"),
  () => FiberRef.unsafeMake<RunState | undefined>(undefined)
)

/** Opens the per-run state and, when the inner handler never ran, counts a skipped duplicate. */
const countSkipped = (onSkip: (counters: Counters) => void) =>
  Handler.around<never, Tally>((effect) =>
    Effect.suspend(() => {
      const state: RunState = { ran: false, attempts: 0 }
      return Effect.locally(effect, currentRun, state).pipe(
        Effect.tap(() => (state.ran ? Effect.void : update(onSkip)))
      )
    })
  )

/** Notes that the handler below the idempotency stage ran (it was not skipped as a duplicate). */
const noteRan = Handler.around<never, never>((effect) =>
  Effect.zipRight(
    Effect.map(FiberRef.get(currentRun), (state) => {
      if (state !== undefined) state.ran = true
    }),
    effect
  )
)

/** Counts each attempt retry makes; attempts after the first of a run are retries. */
const countAttempts = Handler.around<never, Tally>((effect) =>
  Effect.zipRight(
    Effect.flatMap(FiberRef.get(currentRun), (state) =>
      update((c) => {
        c.shippingAttempts++
        if (state === undefined) return
        state.attempts++
        if (state.attempts > 1) c.shippingRetries++
      })),
    effect
  )
)

// Both consumers hand a duplicate that races a live run back to the transport (`onInProgress: "nack"`)
// rather than waiting for it: a waiting copy would run as soon as the first run fails, so a message could
// be dead-lettered by one delivery and applied by the other. The simulator found exactly that.

/**
 * The payments handler. No retry stage: the order service is local, and a transient failure is better
 * handed back to the transport (nack with backoff) than held in memory.
 */
export const paymentsHandler = pipe(
  markOrderPaid,
  Handler.timeout("10 seconds"),
  noteRan,
  Idempotent.idempotent<PaymentWebhook>({
    key: Idempotent.byBusinessKey((envelope) => paymentOf(envelope.data).paymentId),
    namespace: "payment:",
    lease: "30 seconds",
    retention: "7 days",
    onInProgress: "nack"
  }),
  countSkipped((c) => c.paymentDuplicatesSkipped++)
)

/** How the shipping API is retried: jittered exponential backoff, bounded in attempts and in time. */
export const shippingRetry = Retry.policy({
  schedule: Backoff.exponential({ base: "25 millis", cap: "400 millis", jitter: "full" }),
  maxAttempts: 6,
  maxElapsed: "1500 millis"
})

/** The shipping API's breaker: half the last 20 calls failing opens it for half a second. */
export const makeShippingBreaker = Breaker.make("shipping-api", {
  window: { kind: "count", size: 20 },
  minimumCalls: 10,
  failureRateThreshold: 0.5,
  openDuration: "500 millis",
  permittedProbes: 2,
  probeSuccessRatio: 0.5
})

/** Each attempt of a shipping call is bounded by this; the stand-in's slow answers exceed it. */
export const shippingAttemptTimeout = Duration.millis(250)

/** The shipping handler, in the canonical order: timeout → breaker → retry → idempotency. */
export const shippingHandler = (breaker: Breaker.Breaker) =>
  pipe(
    bookShipment,
    Handler.timeout(shippingAttemptTimeout),
    Breaker.middleware(breaker),
    countAttempts,
    Retry.middleware(shippingRetry),
    noteRan,
    Idempotent.idempotent<OrderPaid>({ namespace: "shipment:", lease: "30 seconds", retention: "7 days", onInProgress: "nack" }),
    countSkipped((c) => c.shippingDuplicatesSkipped++),
    // Only OrderPaid v1 is understood here; another version is dead-lettered (category `schema`) with its
    // dataschema, never half-handled.
    Versioning.accept(orderPaidContract.id, [1])
  )

/** Redelivery backoff for nacked deliveries: short, because this demo's failures are short. */
export const redeliveryDelay = (attempt: number): Duration.Duration =>
  Duration.millis(Math.min(2_000, 50 * 2 ** Math.max(0, attempt - 1)))

/** Records the final settlement of each delivery of `topic` in the counters. */
const observe = (counters: Counters, settledIds: IdTable, topic: string) => (settled: Pipeline.Settled) =>
  Effect.sync(() => {
    switch (settled.outcome) {
      case "acked":
        settledIds.add(settled.delivery.message.id)
        return
      case "dead-lettered":
        settledIds.add(settled.delivery.message.id)
        bump(counters.deadLettered, topic)
        return
      case "nacked":
        counters.redeliveries++
        return
      default:
        return
    }
  })

/** Consumes `payments` into the order service until interrupted. */
export const consumePayments = Effect.gen(function*() {
  const counters = yield* Tally
  return yield* Transport.consume(paymentsConsumer.topic, paymentsHandler, {
    schema: paymentsConsumer.schema,
    group: paymentsConsumer.group,
    concurrency: 8,
    orderBy: "subject",
    maxAttempts: 10,
    redeliveryDelay,
    onSettled: observe(counters, counters.paymentsSettled, paymentsConsumer.topic)
  })
})

/** Consumes `order-paid` into the shipping API until interrupted. */
export const consumeOrderPaid = (breaker: Breaker.Breaker) =>
  Effect.gen(function*() {
    const counters = yield* Tally
    return yield* Transport.consume(orderPaidConsumer.topic, shippingHandler(breaker), {
      schema: orderPaidConsumer.schema,
      group: orderPaidConsumer.group,
      concurrency: 16,
      orderBy: "subject",
      maxAttempts: 5,
      redeliveryDelay,
      onSettled: observe(counters, counters.orderPaidSettled, orderPaidConsumer.topic)
    })
  })
