import { Envelope } from "@bulwark/core"
import { Outbox } from "@bulwark/outbox"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Schedule, Schema } from "effect"

const OrderPaid = Schema.Struct({ orderId: Schema.String, amountCents: Schema.Int })
const appendOrderPaid = Outbox.append(OrderPaid)

/**
 * Retried when the database goes away, even at COMMIT (a typed `Transaction.CommitUnknown`, not a defect).
 * The state change is conditional: a retry of a transaction that did commit finds it done and appends nothing.
 */
export const markPaid = (orderId: string, amountCents: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const event = yield* Envelope.make({
      type: "com.example.order.paid",
      source: "/orders",
      subject: orderId,
      data: { orderId, amountCents }
    })
    yield* sql.withTransaction(Effect.gen(function*() {
      const changed = yield* sql`UPDATE orders SET status = 'paid' WHERE id = ${orderId} AND status <> 'paid' RETURNING id`
      if (changed.length > 0) yield* appendOrderPaid("orders.paid", [event])
    }))
  }).pipe(Effect.retry(Schedule.exponential("100 millis").pipe(Schedule.jittered, Schedule.upTo("30 seconds"))))
