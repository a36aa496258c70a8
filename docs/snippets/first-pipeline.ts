import { Envelope, Handler } from "@bulwark/core"
import { Idempotent, MemoryIdempotencyStore } from "@bulwark/idempotency"
import { Retry } from "@bulwark/retry"
import { Memory, Transport } from "@bulwark/transport"
import { Effect, Fiber, Layer, pipe, Schema } from "effect"

const OrderPaid = Schema.Struct({ orderId: Schema.String, amountCents: Schema.Int })

const markPaid: Handler.Handler<typeof OrderPaid.Type> = (envelope) =>
  Effect.log(`order ${envelope.data.orderId} paid ${envelope.data.amountCents}`)

export const handler = pipe(
  markPaid,
  Handler.timeout("2 seconds"), // bounds each attempt
  Retry.middleware(Retry.policy({ maxAttempts: 3 })), // transient failures only
  Idempotent.idempotent({ key: "envelopeId" }) // at most once per envelope id
)

export const main = Effect.gen(function*() {
  const consumer = yield* Effect.fork(
    Transport.consume("orders.paid", handler, { schema: OrderPaid, concurrency: 16 })
  )
  const paid = yield* Envelope.make({
    type: "com.example.order.paid",
    source: "/orders",
    subject: "order-1",
    data: { orderId: "order-1", amountCents: 1250 }
  })
  // Sent twice, as providers do: the second copy is acked without running markPaid again.
  yield* Transport.publishEnvelopes(OrderPaid)("orders.paid", [paid, paid])

  const transport = yield* Memory.MemoryTransportInspector
  while (transport.pending("orders.paid") > 0) yield* Effect.sleep("10 millis")
  yield* Fiber.interrupt(consumer) // lets in-flight work finish, then stops
}).pipe(Effect.provide(Layer.merge(Memory.layer(), MemoryIdempotencyStore.layer())))

// Logs "order order-1 paid 1250" once, then exits 0.
Effect.runPromise(main).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
