import { Handler } from "@bulwark/core"
import { Breaker } from "@bulwark/circuit-breaker"
import { DeadLetter, DeadLetterStore } from "@bulwark/dead-letter"
import { Idempotent } from "@bulwark/idempotency"
import { Retry } from "@bulwark/retry"
import { Transport } from "@bulwark/transport"
import { Effect, pipe, Schema } from "effect"

const Shipment = Schema.Struct({ orderId: Schema.String })

const ship: Handler.Handler<typeof Shipment.Type> = (envelope) =>
  Effect.log(`shipping ${envelope.data.orderId}`)

/** The canonical stack, innermost first: timeout → breaker → retry → idempotency → deadLetter. */
export const canonical = Effect.gen(function*() {
  const breaker = yield* Breaker.make("shipping-api")
  const dlq = yield* DeadLetterStore.DeadLetterStore
  return pipe(
    ship,
    Handler.timeout("2 seconds"),
    Breaker.middleware(breaker),
    Retry.middleware(Retry.policy({ maxAttempts: 4 })),
    Idempotent.idempotent({ key: "envelopeId" }),
    DeadLetter.deadLetter(dlq, { topic: "shipments", schema: Shipment })
  )
})

/** A timeout applied after retry bounds all attempts together: `Pipeline.run` refuses to start. */
export const rejected = pipe(
  ship,
  Retry.middleware(Retry.policy()),
  Handler.timeout("10 seconds")
)

export const refusesToStart = Transport.consume("shipments", rejected, { schema: Shipment }).pipe(
  Effect.catchTag("MiddlewareOrderError", (error) => Effect.logError(error.message))
)

/** Checking a stack yourself, e.g. in a unit test. */
export const check = Handler.checkOrder(rejected)
