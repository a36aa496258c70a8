/**
 * The business of the example: two payment providers tell us that an order was paid, the order service
 * records it and announces `OrderPaid`, and shipping books a parcel for every paid order.
 *
 * The providers speak different dialects — AcmePay signs with Standard Webhooks, the other looks like
 * Stripe — so the `payments` topic carries either shape and {@link paymentOf} reads both the same way.
 */
import * as Contract from "@bulwark/contracts/Contract"
import { Envelope } from "@bulwark/core"
import { Effect, Schema } from "effect"

/** Where the ingress persists accepted payment webhooks. */
export const paymentsTopic = "payments"
/** Where the outbox relay publishes `OrderPaid`. */
export const orderPaidTopic = "order-paid"

/** AcmePay's webhook body (Standard Webhooks signs it; the id travels in `webhook-id`). */
export const AcmePayment = Schema.Struct({
  type: Schema.Literal("payment.succeeded"),
  data: Schema.Struct({
    paymentId: Schema.NonEmptyString,
    orderId: Schema.NonEmptyString,
    customerId: Schema.NonEmptyString,
    amount: Schema.Int.pipe(Schema.positive()),
    currency: Schema.String
  })
})
export type AcmePayment = typeof AcmePayment.Type

/** The ingress's contract for AcmePay payments on the `payments` topic. */
export const acmePaymentContract = Contract.producer({
  topic: paymentsTopic,
  type: "com.acmepay.payment.succeeded",
  source: "/webhooks/acmepay",
  schema: AcmePayment,
  version: 1,
  description: "An AcmePay payment, as its webhook said it (Standard Webhooks, verified)"
})

/** A Stripe-style event: the id is in the body, the order lives in the payment intent's metadata. */
export const StripeEvent = Schema.Struct({
  id: Schema.NonEmptyString,
  object: Schema.Literal("event"),
  type: Schema.Literal("payment_intent.succeeded"),
  data: Schema.Struct({
    object: Schema.Struct({
      id: Schema.NonEmptyString,
      amount: Schema.Int.pipe(Schema.positive()),
      currency: Schema.String,
      metadata: Schema.Struct({ order_id: Schema.NonEmptyString, customer_id: Schema.NonEmptyString })
    })
  })
})
export type StripeEvent = typeof StripeEvent.Type

/** The ingress's contract for Stripe-style payment events on the `payments` topic. */
export const stripeEventContract = Contract.producer({
  topic: paymentsTopic,
  type: "com.stripe.payment_intent.succeeded",
  source: "/webhooks/stripe",
  schema: StripeEvent,
  version: 1,
  description: "A Stripe-style payment_intent.succeeded event, as its webhook said it (verified)"
})

/** Either provider's webhook, as the `payments` topic carries it. */
export const PaymentWebhook = Schema.Union(AcmePayment, StripeEvent)
export type PaymentWebhook = typeof PaymentWebhook.Type

/** A payment, whichever provider reported it. */
export interface Payment {
  readonly provider: "acmepay" | "stripe"
  readonly paymentId: string
  readonly orderId: string
  readonly customerId: string
  readonly amount: number
  readonly currency: string
}

/** Reads either provider's webhook as a {@link Payment}. */
export const paymentOf = (webhook: PaymentWebhook): Payment =>
  "object" in webhook
    ? {
      provider: "stripe",
      paymentId: webhook.data.object.id,
      orderId: webhook.data.object.metadata.order_id,
      customerId: webhook.data.object.metadata.customer_id,
      amount: webhook.data.object.amount,
      currency: webhook.data.object.currency
    }
    : { provider: "acmepay", ...webhook.data }

/** The ordering key of a payment: one customer's payments (and shipments) are handled in order. */
export const customerOf = (webhook: PaymentWebhook): string => paymentOf(webhook).customerId

/** The event the order service appends to its outbox when an order becomes paid. */
export const OrderPaid = Schema.Struct({
  orderId: Schema.NonEmptyString,
  customerId: Schema.NonEmptyString,
  paymentId: Schema.NonEmptyString,
  amount: Schema.Int,
  currency: Schema.String,
  /** The order service's commit sequence: a customer's shipments must follow it. */
  sequence: Schema.Int
})
export type OrderPaid = typeof OrderPaid.Type

/** The CloudEvents type of {@link OrderPaid}. */
export const orderPaidType = "com.example.order.paid"

/** The order service's contract for `OrderPaid`; every envelope carries its `dataschema` (id and version). */
export const orderPaidContract = Contract.producer({
  topic: orderPaidTopic,
  type: orderPaidType,
  source: "/orders",
  schema: OrderPaid,
  version: 1,
  description: "An order became paid (appended in the same transaction as the order, published by the relay)"
})

/** What an `OrderPaid` envelope is made of, for a payment: keyed by customer, so one customer's events stay in order. */
export const orderPaidFields = (payment: Payment, sequence: number) => ({
  type: orderPaidContract.type,
  source: orderPaidContract.source,
  dataschema: orderPaidContract.dataschema,
  subject: payment.customerId,
  data: {
    orderId: payment.orderId,
    customerId: payment.customerId,
    paymentId: payment.paymentId,
    amount: payment.amount,
    currency: payment.currency,
    sequence
  } satisfies OrderPaid
})

/** Builds the `OrderPaid` envelope caused by a payment envelope (same correlation id and trace). */
export const orderPaidEvent = (
  payment: Payment,
  sequence: number,
  cause: Envelope.Envelope<unknown>
): Effect.Effect<Envelope.Envelope<OrderPaid>> =>
  // One per order (the order row's status guards the append), so the order names it: the shipping API's
  // idempotency key is then the order's, whichever relay publishes it and however often.
  Envelope.make({ ...orderPaidFields(payment, sequence), id: `${payment.orderId}:paid`, headers: Envelope.causedBy(cause) })
