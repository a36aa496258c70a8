/**
 * The ingress: one route per payment provider. Each verifies the provider's signature over the raw bytes,
 * decodes the body, drops a repeated event id and persists the event on the `payments` topic before it
 * answers 202. Nothing else happens in the request: the order service reads the topic.
 */
import { Ingress, Verifier } from "@bulwark/webhook"
import { HttpRouter } from "@effect/platform"
import { Data, Effect } from "effect"
import { type AddressInfo } from "node:net"
import { createServer } from "node:http"
import { acmePaymentContract, AcmePayment, paymentsTopic, StripeEvent, stripeEventContract } from "./Domain.js"

/** Route of AcmePay (Standard Webhooks). */
export const acmePayPath = "/webhooks/acmepay"
/** Route of the Stripe-style provider. */
export const stripePath = "/webhooks/stripe"

/** The providers' active signing secrets (several during a rotation). */
export interface Secrets {
  /** `whsec_…` secrets (Standard Webhooks). */
  readonly acmepay: ReadonlyArray<string>
  /** Stripe endpoint secrets. */
  readonly stripe: ReadonlyArray<string>
}

/** AcmePay's ingress settings (the simulation runs the same receiver). */
export const acmePay = (secrets: Secrets) => ({
  verifier: Verifier.standard(secrets.acmepay, { source: "acmepay" }),
  schema: AcmePayment,
  topic: paymentsTopic,
  type: acmePaymentContract.type,
  dataschema: acmePaymentContract.dataschema,
  subject: (payment: AcmePayment) => payment.data.customerId
})

/** The Stripe-style provider's ingress settings. */
const stripe = (secrets: Secrets) => ({
  verifier: Verifier.stripe(secrets.stripe, { source: "stripe" }),
  schema: StripeEvent,
  topic: paymentsTopic,
  type: (event: StripeEvent) => `com.stripe.${event.type}`,
  dataschema: stripeEventContract.dataschema,
  subject: (event: StripeEvent) => event.data.object.metadata.customer_id,
  // Stripe signs no id header: its event id is the dedupe key.
  id: (event: StripeEvent) => event.id
})

/** Both routes on an `@effect/platform` router, for applications that serve one; needs `Transport.Publisher` and `ReplayGuard`. */
export const router = (secrets: Secrets) =>
  HttpRouter.empty.pipe(Ingress.route(acmePayPath, acmePay(secrets)), Ingress.route(stripePath, stripe(secrets)))

/** The server could not listen. */
export class ListenError extends Data.TaggedError("ListenError")<{ readonly cause: unknown }> {
  override get message(): string {
    return `the ingress could not listen: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/**
 * Serves both routes on 127.0.0.1 (an ephemeral port unless given) for the scope's lifetime and answers the
 * base URL. It uses `Ingress.nodeListener` — the same verify, decode, dedupe and persist pipeline as the
 * router, without the platform's per-request machinery, which is most of the cost at this request rate.
 */
export const serve = (secrets: Secrets, port = 0) =>
  Effect.gen(function*() {
    const acmePayListener = yield* Ingress.nodeListener(acmePayPath, acmePay(secrets))
    const stripeListener = yield* Ingress.nodeListener(stripePath, stripe(secrets))
    const server = createServer((request, response) =>
      (request.url?.startsWith(stripePath) === true ? stripeListener : acmePayListener)(request, response))
    yield* Effect.acquireRelease(
      Effect.async<void, ListenError>((resume) => {
        server.once("error", (cause) => resume(Effect.fail(new ListenError({ cause }))))
        server.listen(port, "127.0.0.1", () => resume(Effect.void))
      }),
      () =>
        Effect.async<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
    )
    const address = server.address() as AddressInfo
    return { port: address.port, url: `http://127.0.0.1:${address.port}` }
  })
