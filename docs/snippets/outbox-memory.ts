import { Envelope } from "@bulwark/core"
import { MemoryOutboxStore, Outbox, Relay } from "@bulwark/outbox"
import { Memory } from "@bulwark/transport"
import { Effect, Layer, Schema } from "effect"

const OrderPaid = Schema.Struct({ orderId: Schema.String, amountCents: Schema.Int })
const appendOrderPaid = Outbox.append(OrderPaid)

/** The application's own state, in memory: changed only when the transaction commits. */
const paid = new Set<string>()

/** The state change and the event commit together, or neither does (a failure or interruption drops both). */
export const markPaid = (orderId: string, amountCents: number) =>
  MemoryOutboxStore.transaction(
    Effect.gen(function*() {
      const event = yield* Envelope.make({
        type: "com.example.order.paid",
        source: "/orders",
        subject: orderId,
        data: { orderId, amountCents }
      })
      yield* appendOrderPaid("orders.paid", [event])
      yield* MemoryOutboxStore.onCommit(() => paid.add(orderId)) // runs synchronously at commit
    })
  )

/** The same relay as over SQL, over the memory store and the memory transport. */
export const AppLive = Relay.layer({ batchSize: 200 }).pipe(
  Layer.provideMerge(Layer.merge(MemoryOutboxStore.layer(), Memory.layer()))
)
