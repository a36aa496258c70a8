import { Handler } from "@bulwark/core"
import { Idempotent, MemoryIdempotencyStore } from "@bulwark/idempotency"
import { Retry } from "@bulwark/retry"
import { Memory, Transport } from "@bulwark/transport"
import { Effect, Layer, pipe, Schema } from "effect"

const OrderPaid = Schema.Struct({ orderId: Schema.String, amountCents: Schema.Int })

const markPaid: Handler.Handler<typeof OrderPaid.Type> = (envelope) =>
  Effect.log(`order ${envelope.data.orderId} paid ${envelope.data.amountCents}`)

export const handler = pipe(
  markPaid,
  Handler.timeout("2 seconds"), // bounds each attempt
  Retry.middleware(Retry.policy({ maxAttempts: 3 })), // transient failures only
  Idempotent.idempotent({ key: "envelopeId" }) // at most once per envelope id
)

export const main = Transport.consume("orders.paid", handler, { schema: OrderPaid, concurrency: 16 }).pipe(
  Effect.provide(Layer.merge(Memory.layer(), MemoryIdempotencyStore.layer()))
)
