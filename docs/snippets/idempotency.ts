import { Handler } from "@bulwark/core"
import { IdempotencyStore, Idempotent, SqlIdempotencyStore } from "@bulwark/idempotency"
import { Database } from "@bulwark/sql"
import { Effect, Layer, pipe, Schema } from "effect"

const OrderPaid = Schema.Struct({ orderId: Schema.String, amountCents: Schema.Int })

declare const fulfil: (orderId: string) => Effect.Effect<void> // your side effect

const fulfilOrder: Handler.Handler<typeof OrderPaid.Type> = (envelope) => fulfil(envelope.data.orderId)

/** The provider re-sends the same payment under new event ids: key on the order, not on the id. */
export const handler = pipe(
  fulfilOrder,
  Idempotent.idempotent<typeof OrderPaid.Type>({
    key: Idempotent.byBusinessKey((envelope) => envelope.data.orderId),
    namespace: "fulfilment:",
    lease: "1 minute", // longer than the slowest run
    retention: "14 days", // longer than redelivery + the time an entry may wait in the DLQ
    onInProgress: "nack"
  })
)

/** Any effect, run at most once per key; duplicates get the stored result back. */
export const refund = (orderId: string) =>
  IdempotencyStore.run(
    `refund:${orderId}`,
    Effect.succeed({ refundId: `re_${orderId}` }),
    Schema.Struct({ refundId: Schema.String }),
    { lease: "30 seconds", retention: "30 days" }
  )

/** The SQL store on the database chosen by BULWARK_DATABASE_URL (embedded PGlite when unset). */
export const StoreLive = SqlIdempotencyStore.layer().pipe(Layer.provide(Database.layerConfig()))
