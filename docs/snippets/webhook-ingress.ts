import { Memory } from "@bulwark/transport"
import { Ingress, Keyring, ReplayGuard, Verifier } from "@bulwark/webhook"
import { HttpRouter } from "@effect/platform"
import { Effect, Layer, Schema } from "effect"

/** The provider's payload, decoded from the exact bytes that were verified. */
const PaymentEvent = Schema.Struct({
  id: Schema.String,
  type: Schema.String,
  data: Schema.Struct({ orderId: Schema.String, amountCents: Schema.Int })
})

/** Verify → decode → dedupe → publish → 202. No business logic runs in the request. */
export const server = Effect.gen(function*() {
  const standard = yield* Verifier.fromKeyring("standard", "payments", { tolerance: "5 minutes" })
  const router = HttpRouter.empty.pipe(
    Ingress.route("/webhooks/payments", {
      verifier: standard,
      schema: PaymentEvent,
      topic: "payments.events",
      type: (event) => `com.example.${event.type}`,
      subject: (event) => event.data.orderId
    }),
    Ingress.route("/webhooks/stripe", {
      verifier: Verifier.stripe(["whsec_from_the_stripe_dashboard"], { source: "stripe" }),
      schema: PaymentEvent,
      topic: "payments.events",
      type: (event) => `com.stripe.${event.type}`,
      subject: (event) => event.data.orderId,
      id: (event) => event.id // Stripe signs no id header: dedupe on the event id
    })
  )
  const { url } = yield* Ingress.listen(router, { port: 8080 })
  yield* Effect.logInfo(`webhooks on ${url}`)
  return yield* Effect.never
}).pipe(
  Effect.scoped,
  Effect.provide(Layer.mergeAll(
    Keyring.layerConfig(["payments"]), // BULWARK_WEBHOOK_PAYMENTS_SECRETS=whsec_new,whsec_old
    ReplayGuard.layerMemory(),
    Memory.layer() // any Transport.Publisher
  ))
)
