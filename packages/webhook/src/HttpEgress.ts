/**
 * The HTTP egress the sender and the dispatcher use: name resolution (for the SSRF guard) and one POST to an
 * approved address. The default is Node's `http`/`https` with the connection pinned to the address the guard
 * approved and redirects never followed. Provide another (a simulated endpoint, a proxy) with {@link layer}.
 */
import { Context, Effect, Layer } from "effect"
import { lookup } from "node:dns/promises"
import * as internalHttp from "./internal/http.js"

/** A resolved address of a host. */
export interface Address {
  readonly address: string
  readonly family: 4 | 6
}

/** One POST. */
export interface Request {
  readonly url: URL
  readonly headers: Readonly<Record<string, string>>
  readonly body: Uint8Array
  /** The address the SSRF guard approved: the connection goes there, whatever DNS says by then. */
  readonly address: Address
  /** Bytes of response body to keep. */
  readonly excerptBytes: number
}

/** The answer to a POST. */
export interface Response {
  readonly status: number
  /** Lower-case header names. */
  readonly headers: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>
  /** The first `excerptBytes` of the body. */
  readonly excerpt: string
}

/** A request that got no answer (refused, reset, DNS); the message says why. */
export interface NetworkError {
  readonly _tag: "NetworkError"
  readonly message: string
}

/** The egress port. */
export class HttpEgress extends Context.Tag("@bulwark/webhook/HttpEgress")<HttpEgress, {
  /** Every address of `host` (the guard checks each). */
  readonly lookup: (host: string) => Effect.Effect<ReadonlyArray<Address>, NetworkError>
  /** Sends one POST; interruption aborts it. */
  readonly post: (request: Request) => Effect.Effect<Response, NetworkError>
}>() {}

const networkError = (error: unknown): NetworkError => ({
  _tag: "NetworkError",
  message: error instanceof Error ? error.message : String(error)
})

/** Node's `http`/`https`, pinned to the approved address, no redirects followed. */
export const node: Context.Tag.Service<HttpEgress> = {
  lookup: (host) =>
    Effect.tryPromise({
      try: () => lookup(host, { all: true, verbatim: true }),
      catch: networkError
    }).pipe(Effect.map((all) => all.map((a) => ({ address: a.address, family: a.family === 6 ? 6 as const : 4 as const })))),
  post: (request) =>
    Effect.tryPromise({
      try: (signal) =>
        internalHttp.post(request.url, { ...request.headers }, request.body, request.address, request.excerptBytes, signal),
      catch: networkError
    })
}

/** Provides an egress (default {@link node}). */
export const layer = (egress: Context.Tag.Service<HttpEgress> = node): Layer.Layer<HttpEgress> =>
  Layer.succeed(HttpEgress, egress)

/** The egress in context, else {@link node}. */
export const current: Effect.Effect<Context.Tag.Service<HttpEgress>> = Effect.map(
  Effect.serviceOption(HttpEgress),
  (egress) => egress._tag === "Some" ? egress.value : node
)
