import { Handler } from "@bulwark/core"
import { DeadLetter, DeadLetterStore, Replay, SqlDeadLetterStore } from "@bulwark/dead-letter"
import { Idempotent } from "@bulwark/idempotency"
import { Retry } from "@bulwark/retry"
import { Database } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import { Effect, Layer, pipe, Schema } from "effect"

const Shipment = Schema.Struct({ orderId: Schema.String })

declare const ship: Handler.Handler<typeof Shipment.Type, { readonly status: number }> // your handler

/** Exhausted and permanent failures are stored whole, with their category, and the delivery is acked. */
export const consumer = Effect.gen(function*() {
  const store = yield* DeadLetterStore.DeadLetterStore
  const handler = pipe(
    ship,
    Handler.timeout("5 seconds"),
    Retry.middleware(Retry.policy({ maxAttempts: 5 })),
    Idempotent.idempotent(),
    DeadLetter.deadLetter(store, { topic: "shipments", schema: Shipment })
  )
  // What the pipeline itself dead-letters (undecodable bytes) lands in `shipments.dlq`: drain it too.
  yield* Effect.forkScoped(DeadLetter.drain("shipments"))
  return yield* Transport.consume("shipments", handler, { schema: Shipment })
})

/** The SQL store, with an edge-triggered alert when 100 entries await triage. */
export const StoreLive = DeadLetterStore.alerts({
  threshold: 100,
  recoverAt: 50,
  onAlert: (event) => Effect.logError(`dead-letter ${event._tag}: depth ${event.depth} (threshold ${event.threshold})`)
}).pipe(
  Layer.provide(SqlDeadLetterStore.layer()),
  Layer.provide(Database.layerConfig())
)

/** After the carrier recovered: replay its timeouts, 5 per second, each entry at most once. */
export const replayTimeouts = Replay.replay({
  filter: { category: "timeout", originTopic: "shipments" },
  rate: 5
})
