import { Envelope } from "@bulwark/core"
import { Inbox, Outbox, Relay } from "@bulwark/outbox"
import { Database } from "@bulwark/sql"
import { Memory } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer, Option, Schema } from "effect"

const OrderPaid = Schema.Struct({ orderId: Schema.String, amountCents: Schema.Int })
const appendOrderPaid = Outbox.append(OrderPaid)

/** The state change and the event commit together, or neither does. */
export const markPaid = (orderId: string, amountCents: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.withTransaction(
      Effect.gen(function*() {
        yield* sql`UPDATE orders SET status = 'paid' WHERE id = ${orderId}`
        const event = yield* Envelope.make({
          type: "com.example.order.paid",
          source: "/orders",
          subject: orderId, // per-subject publish order
          data: { orderId, amountCents }
        })
        yield* appendOrderPaid("orders.paid", [event])
      })
    )
  })

/** A relay in the background, publishing through whatever `Transport.Publisher` is provided. */
export const AppLive = Relay.layer({ batchSize: 200, lease: "30 seconds", maxAttempts: 10 }).pipe(
  Layer.provideMerge(Layer.mergeAll(Outbox.layer(), Inbox.layer(), Memory.layer())),
  Layer.provideMerge(Database.layerConfig())
)

/** Consumer side: the id is recorded in the same transaction as the consumer's own change. */
export const credit = (messageId: string, customerId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Inbox.process(messageId, "loyalty", sql`UPDATE customers SET points = points + 1 WHERE id = ${customerId}`)
  ).pipe(Effect.map(Option.isSome)) // false: already processed, skipped

/** What the relay exports as `bulwark_outbox_backlog` and `bulwark_outbox_lag_ms`. */
export const health = Effect.all({ backlog: Outbox.backlog, lag: Outbox.lag, dead: Outbox.deadLetters(20) })
