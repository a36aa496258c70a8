/**
 * The example's services and the contracts between them, declared with the very schemas the code uses:
 *
 * - **ingress** writes AcmePay and Stripe-style payments to `payments`;
 * - **orders** reads `payments` and writes `OrderPaid` to `order-paid` (through its outbox);
 * - **shipping** reads `order-paid`;
 * - **bank** (the poller of the bank's `GET /payments?since=`) writes transfers to `bank-transfers`, which
 *   **ledger** reads.
 *
 * `npm run contracts:export` (from examples/payments) writes `contracts/<service>.contract.json` and
 * `contracts/asyncapi.json`; `npm run contracts:check` is what CI runs (exit 1 names the field and the consumer
 * a change would break).
 */
import * as Contract from "@bulwark/contracts/Contract"
import { bankTransfersTopic, Transfer } from "./Polled.js"
import { acmePaymentContract, OrderPaid, orderPaidContract, orderPaidTopic, PaymentWebhook, paymentsTopic, stripeEventContract } from "./Domain.js"

/** The order service's reading of `payments` (either provider's shape). */
export const paymentsConsumer = Contract.consumer({ topic: paymentsTopic, group: "orders", schema: PaymentWebhook })

/** Shipping's reading of `order-paid`. */
export const orderPaidConsumer = Contract.consumer({ topic: orderPaidTopic, group: "shipping", schema: OrderPaid, types: [orderPaidContract.type] })

/** What the bank poller publishes: each version of a transfer the bank's API answered. */
export const transferContract = Contract.producer({
  topic: bankTransfersTopic,
  type: "com.example.bank.transfer.changed",
  source: "https://bank.example/payments",
  schema: Transfer,
  version: 1,
  description: "A bank transfer as the bank's polling API answered it (each version once)"
})

/** The ledger's reading of `bank-transfers`. */
export const transferConsumer = Contract.consumer({ topic: bankTransfersTopic, group: "ledger", schema: Transfer, types: [transferContract.type] })

/** Every service of the example. */
export const contracts = [
  Contract.service("ingress", {
    description: "Receives the payment providers' signed webhooks and persists them on the payments topic",
    produces: [acmePaymentContract, stripeEventContract]
  }),
  Contract.service("orders", {
    description: "Marks orders paid, idempotently per payment, and announces OrderPaid through its outbox",
    produces: [orderPaidContract],
    consumes: [paymentsConsumer]
  }),
  Contract.service("shipping", {
    description: "Books a parcel for every paid order",
    consumes: [orderPaidConsumer]
  }),
  Contract.service("bank", {
    description: "Polls the bank's API (it sends no webhooks) and publishes each transfer version once",
    produces: [transferContract]
  }),
  Contract.service("ledger", {
    description: "Records each bank transfer version it receives",
    consumes: [transferConsumer]
  })
]
