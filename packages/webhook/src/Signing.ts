/**
 * Signing, for senders and tests: Standard Webhooks headers (`v1` HMAC and `v1a` ed25519), Stripe's and
 * GitHub's signature headers, and generators for fresh secrets and key pairs.
 */
import { Clock, Effect } from "effect"
import { generateKeyPairSync, randomBytes } from "node:crypto"
import * as internal from "./internal/crypto.js"
import { Envelope } from "@bulwark/core"
import { MalformedHeader, UnknownKey } from "./WebhookError.js"

/** The three Standard Webhooks headers. */
export interface StandardHeaders {
  readonly "webhook-id": string
  readonly "webhook-timestamp": string
  readonly "webhook-signature": string
}

/** What to sign. Id defaults to a fresh `msg_` id (from Effect `Random`), timestamp to `Clock` (unix seconds). */
export interface SignInput {
  readonly body: Uint8Array
  readonly id?: string
  readonly timestamp?: number
}

/**
 * Signs with every secret (several during a rotation, space-separated in one header): `whsec_…` yields a
 * `v1` signature, `whsk_…` a `v1a` one. Fails with {@link UnknownKey} when a secret cannot sign (e.g. a
 * public `whpk_` key) and {@link MalformedHeader} for an id containing `.`.
 */
export const standard = (
  secrets: ReadonlyArray<string>,
  input: SignInput
): Effect.Effect<StandardHeaders, UnknownKey | MalformedHeader> =>
  Effect.gen(function*() {
    const keys: Array<internal.DecodedKey> = []
    for (const secret of secrets) {
      const key = internal.decodeStandardKey(secret)
      if (typeof key === "string") return yield* new UnknownKey({ source: "signer", detail: key })
      if (key.kind === "ed25519-public") return yield* new UnknownKey({ source: "signer", detail: "a whpk_ public key cannot sign" })
      keys.push(key)
    }
    if (keys.length === 0) return yield* new UnknownKey({ source: "signer", detail: "no secret to sign with" })
    const id = input.id ?? `msg_${(yield* Envelope.uuid).replaceAll("-", "")}`
    if (id === "" || id.includes(".")) return yield* new MalformedHeader({ header: "webhook-id", detail: "must be non-empty and contain no '.'" })
    const timestamp = input.timestamp ?? Math.floor((yield* Clock.currentTimeMillis) / 1000)
    return {
      "webhook-id": id,
      "webhook-timestamp": String(timestamp),
      "webhook-signature": internal.signStandard(keys, id, timestamp, input.body)
    }
  })

/** Builds a `Stripe-Signature` header value (timestamp from `Clock` unless given). */
export const stripe = (secrets: ReadonlyArray<string>, body: Uint8Array, timestamp?: number): Effect.Effect<string> =>
  Effect.map(Clock.currentTimeMillis, (now) => internal.signStripe(secrets, timestamp ?? Math.floor(now / 1000), body))

/** Builds an `X-Hub-Signature-256` header value. */
export const github = (secret: string, body: Uint8Array): string => internal.signGithub(secret, body)

/** A fresh random `whsec_` secret (32 bytes). */
export const generateSecret = (): string => `whsec_${randomBytes(32).toString("base64")}`

/** A fresh ed25519 key pair as `whsk_` (32-byte seed) and `whpk_` strings. */
export const generateKeyPair = (): { readonly secretKey: string; readonly publicKey: string } => {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519")
  return {
    secretKey: `whsk_${internal.exportEd25519Seed(privateKey).toString("base64")}`,
    publicKey: `whpk_${internal.exportEd25519Public(publicKey).toString("base64")}`
  }
}
