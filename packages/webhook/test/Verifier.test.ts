import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, FastCheck as fc, TestClock } from "effect"
import { createHmac } from "node:crypto"
import * as Signing from "../src/Signing.js"
import * as Verifier from "../src/Verifier.js"
import { decodeBase64 } from "../src/internal/crypto.js"

const body = new TextEncoder().encode(JSON.stringify({ type: "invoice.paid", data: { id: "in_1", amount: 42 } }))
const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
const other = "whsec_" + Buffer.alloc(32, 7).toString("base64")
const T0 = 1_700_000_000

const at = (seconds: number) => TestClock.setTime(seconds * 1000)

const failureTag = <A, E extends { _tag: string }>(effect: Effect.Effect<A, E>) =>
  Effect.map(Effect.exit(effect), (exit) => Exit.isFailure(exit) ? exit.cause._tag === "Fail" ? exit.cause.error._tag : "defect" : "success")

describe("Verifier.standard", () => {
  it.effect("verifies a v1 signature over the raw body, id and timestamp", () =>
    Effect.gen(function*() {
      yield* at(T0)
      const headers = yield* Signing.standard([secret], { id: "msg_1", body })
      expect(headers["webhook-timestamp"]).toBe(String(T0))
      const verified = yield* Verifier.standard([secret]).verify({ headers: { ...headers }, body })
      expect(verified).toEqual({ scheme: "standard", id: "msg_1", timestamp: T0 })
    }))

  it.effect("refuses a body that differs by one byte, and a re-serialised body", () =>
    Effect.gen(function*() {
      yield* at(T0)
      const headers = yield* Signing.standard([secret], { id: "msg_1", body })
      const tampered = new Uint8Array(body)
      tampered[5] ^= 1
      const reserialised = new TextEncoder().encode(JSON.stringify(JSON.parse(new TextDecoder().decode(body)), null, 1))
      const verifier = Verifier.standard([secret])
      expect(yield* failureTag(verifier.verify({ headers: { ...headers }, body: tampered }))).toBe("NoMatchingSignature")
      expect(yield* failureTag(verifier.verify({ headers: { ...headers }, body: reserialised }))).toBe("NoMatchingSignature")
      expect(yield* failureTag(verifier.verify({ headers: { ...headers, "webhook-id": "msg_2" }, body }))).toBe("NoMatchingSignature")
    }))

  it.effect("enforces the tolerance in both directions, configurable", () =>
    Effect.gen(function*() {
      yield* at(T0)
      const headers = { ...(yield* Signing.standard([secret], { id: "msg_1", body })) }
      const verifier = Verifier.standard([secret])
      yield* at(T0 + 300)
      expect(yield* failureTag(verifier.verify({ headers, body }))).toBe("success")
      yield* at(T0 + 301)
      expect(yield* failureTag(verifier.verify({ headers, body }))).toBe("TimestampOutOfTolerance")
      yield* at(T0 - 301)
      expect(yield* failureTag(verifier.verify({ headers, body }))).toBe("TimestampOutOfTolerance")
      yield* at(T0 - 300)
      expect(yield* failureTag(verifier.verify({ headers, body }))).toBe("success")
      yield* at(T0 + 3600)
      expect(yield* failureTag(Verifier.standard([secret], { tolerance: "2 hours" }).verify({ headers, body }))).toBe("success")
    }))

  it.effect("accepts any valid signature among several (rotation) and any active key", () =>
    Effect.gen(function*() {
      yield* at(T0)
      const both = { ...(yield* Signing.standard([other, secret], { id: "msg_1", body })) }
      expect(both["webhook-signature"].split(" ")).toHaveLength(2)
      expect(yield* failureTag(Verifier.standard([secret]).verify({ headers: both, body }))).toBe("success")
      const onlyNew = { ...(yield* Signing.standard([other], { id: "msg_1", body })) }
      expect(yield* failureTag(Verifier.standard([secret, other]).verify({ headers: onlyNew, body }))).toBe("success")
      expect(yield* failureTag(Verifier.standard([secret]).verify({ headers: onlyNew, body }))).toBe("NoMatchingSignature")
      const withUnknownVersion = { ...onlyNew, "webhook-signature": `v2,abcd ${both["webhook-signature"]}` }
      expect(yield* failureTag(Verifier.standard([secret]).verify({ headers: withUnknownVersion, body }))).toBe("success")
    }))

  it.effect("verifies v1a ed25519 with the public key and refuses it with a different key", () =>
    Effect.gen(function*() {
      yield* at(T0)
      const pair = Signing.generateKeyPair()
      const stranger = Signing.generateKeyPair()
      expect(pair.secretKey.startsWith("whsk_")).toBe(true)
      const headers = { ...(yield* Signing.standard([pair.secretKey], { id: "msg_1", body })) }
      expect(headers["webhook-signature"].startsWith("v1a,")).toBe(true)
      expect(yield* failureTag(Verifier.standard([pair.publicKey]).verify({ headers, body }))).toBe("success")
      expect(yield* failureTag(Verifier.standard([pair.secretKey]).verify({ headers, body }))).toBe("success")
      expect(yield* failureTag(Verifier.standard([stranger.publicKey]).verify({ headers, body }))).toBe("NoMatchingSignature")
      // an HMAC key never verifies an ed25519 signature and vice versa
      expect(yield* failureTag(Verifier.standard([secret]).verify({ headers, body }))).toBe("NoMatchingSignature")
      const hmacHeaders = { ...(yield* Signing.standard([secret], { id: "msg_1", body })) }
      expect(yield* failureTag(Verifier.standard([pair.publicKey]).verify({ headers: hmacHeaders, body }))).toBe("NoMatchingSignature")
    }))

  it.effect("answers a typed error for every malformed request", () =>
    Effect.gen(function*() {
      yield* at(T0)
      const good = { ...(yield* Signing.standard([secret], { id: "msg_1", body })) }
      const v = Verifier.standard([secret])
      const without = (name: string) => Object.fromEntries(Object.entries(good).filter(([k]) => k !== name))
      expect(yield* failureTag(v.verify({ headers: without("webhook-id"), body }))).toBe("MissingHeader")
      expect(yield* failureTag(v.verify({ headers: without("webhook-timestamp"), body }))).toBe("MissingHeader")
      expect(yield* failureTag(v.verify({ headers: without("webhook-signature"), body }))).toBe("MissingHeader")
      expect(yield* failureTag(v.verify({ headers: { ...good, "webhook-timestamp": "12.5" }, body }))).toBe("MalformedHeader")
      expect(yield* failureTag(v.verify({ headers: { ...good, "webhook-id": "a.b" }, body }))).toBe("MalformedHeader")
      expect(yield* failureTag(v.verify({ headers: { ...good, "webhook-signature": "garbage" }, body }))).toBe("MalformedHeader")
      expect(yield* failureTag(v.verify({ headers: { ...good, "webhook-signature": "v1,not*base64" }, body }))).toBe("MalformedHeader")
      expect(yield* failureTag(v.verify({ headers: { ...good, "webhook-signature": "v9,AAAA v2,BBBB" }, body }))).toBe("UnsupportedVersion")
      expect(yield* failureTag(Verifier.standard([]).verify({ headers: good, body }))).toBe("UnknownKey")
      expect(yield* failureTag(Verifier.standard(["whsec_!!"]).verify({ headers: good, body }))).toBe("UnknownKey")
    }))

  it.effect("reads headers case-insensitively", () =>
    Effect.gen(function*() {
      yield* at(T0)
      const good = yield* Signing.standard([secret], { id: "msg_1", body })
      const headers = { "Webhook-Id": good["webhook-id"], "WEBHOOK-TIMESTAMP": good["webhook-timestamp"], "webhook-Signature": good["webhook-signature"] }
      expect(yield* failureTag(Verifier.standard([secret]).verify({ headers, body }))).toBe("success")
    }))

  it.effect("errors classify themselves as permanent auth failures and survive a schema round trip", () =>
    Effect.gen(function*() {
      yield* at(T0)
      const { Failure } = yield* Effect.promise(() => import("@bulwark/core"))
      const { Schema } = yield* Effect.promise(() => import("effect"))
      const WebhookError = yield* Effect.promise(() => import("../src/WebhookError.js"))
      const error = yield* Effect.flip(Verifier.standard([secret]).verify({ headers: {}, body }))
      expect(yield* Failure.classify(error)).toEqual({ classification: "permanent", category: "auth" })
      // A plain verifier refuses only with verification errors (ReplayCheckFailed is the replay guard's).
      if (!WebhookError.isVerificationError(error)) return expect.unreachable(error._tag)
      const encoded = Schema.encodeSync(WebhookError.VerificationError)(error)
      expect(encoded).toEqual({ _tag: "MissingHeader", header: "webhook-id" })
      expect(Schema.decodeUnknownSync(WebhookError.VerificationError)(encoded)._tag).toBe("MissingHeader")
    }))
})

describe("Verifier.stripe and Verifier.github", () => {
  it.effect("stripe: verifies t=…,v1=… with tolerance and any of several v1 signatures", () =>
    Effect.gen(function*() {
      yield* at(T0)
      const header = yield* Signing.stripe(["whsec_stripe_a", "whsec_stripe_b"], body)
      expect(header).toMatch(/^t=1700000000,v1=[0-9a-f]{64},v1=[0-9a-f]{64}$/)
      const verified = yield* Verifier.stripe(["whsec_stripe_b"]).verify({ headers: { "stripe-signature": header }, body })
      expect(verified).toEqual({ scheme: "stripe", id: undefined, timestamp: T0 })
      expect(yield* failureTag(Verifier.stripe(["whsec_other"]).verify({ headers: { "stripe-signature": header }, body }))).toBe("NoMatchingSignature")
      expect(yield* failureTag(Verifier.stripe(["whsec_stripe_a"]).verify({ headers: {}, body }))).toBe("MissingHeader")
      expect(yield* failureTag(Verifier.stripe(["whsec_stripe_a"]).verify({ headers: { "stripe-signature": "v1=abc" }, body }))).toBe("MalformedHeader")
      expect(yield* failureTag(Verifier.stripe(["whsec_stripe_a"]).verify({ headers: { "stripe-signature": "t=1700000000,v0=abc" }, body }))).toBe("UnsupportedVersion")
      yield* at(T0 + 301)
      expect(yield* failureTag(Verifier.stripe(["whsec_stripe_a"]).verify({ headers: { "stripe-signature": header }, body }))).toBe("TimestampOutOfTolerance")
    }))

  it.effect("github: verifies sha256=…, reports the delivery id when present, refuses other algorithms", () =>
    Effect.gen(function*() {
      const signature = Signing.github("gh-secret", body)
      const headers = { "x-hub-signature-256": signature, "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958" }
      const verified = yield* Verifier.github(["old", "gh-secret"]).verify({ headers, body })
      expect(verified.id).toBe("72d3162e-cc78-11e3-81ab-4c9367dc0958")
      expect(yield* failureTag(Verifier.github(["nope"]).verify({ headers, body }))).toBe("NoMatchingSignature")
      expect(yield* failureTag(Verifier.github(["gh-secret"]).verify({ headers: { "x-github-delivery": "d-1" }, body }))).toBe("MissingHeader")
      expect(yield* failureTag(Verifier.github(["gh-secret"]).verify({ headers: { ...headers, "x-hub-signature-256": "sha1=abcd" }, body }))).toBe("UnsupportedVersion")
      expect(yield* failureTag(Verifier.github(["gh-secret"]).verify({ headers: { ...headers, "x-hub-signature-256": "sha256=zz" }, body }))).toBe("MalformedHeader")
    }))

  // GitHub's documented check needs only the secret, the raw body and X-Hub-Signature-256 (HMAC-SHA256 hex
  // of the raw body, prefixed "sha256="); the delivery id is not signed, so it is never required.
  const githubVector = {
    secret: "It's a Secret to Everybody",
    payload: "Hello, World!",
    signature: "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
  }

  it.effect("github: GitHub's documented test vector verifies without a delivery id", () =>
    Effect.gen(function*() {
      const payload = new TextEncoder().encode(githubVector.payload)
      const computed = `sha256=${createHmac("sha256", githubVector.secret).update(payload).digest("hex")}`
      expect(computed).toBe(githubVector.signature)
      expect(Signing.github(githubVector.secret, payload)).toBe(githubVector.signature)
      const verified = yield* Verifier.github([githubVector.secret]).verify({ headers: { "X-Hub-Signature-256": githubVector.signature }, body: payload })
      expect(verified).toEqual({ scheme: "github", id: undefined, timestamp: undefined })
      expect(Verifier.check("github", "gh", [githubVector.secret], { headers: { "x-hub-signature-256": githubVector.signature }, body: payload }, 0, 300))
        .toEqual({ scheme: "github", id: undefined, timestamp: undefined })
      // an empty delivery header is the same as none
      expect((yield* Verifier.github([githubVector.secret]).verify({ headers: { "x-hub-signature-256": githubVector.signature, "x-github-delivery": "" }, body: payload })).id)
        .toBeUndefined()
      // and a signature over another body still fails
      expect(yield* failureTag(Verifier.github([githubVector.secret]).verify({ headers: { "x-hub-signature-256": githubVector.signature }, body: new TextEncoder().encode("Hello, World?") })))
        .toBe("NoMatchingSignature")
    }))

  it.effect("github: a node:crypto signature of a JSON body verifies, and the delivery id is reported when present", () =>
    Effect.gen(function*() {
      const signature = `sha256=${createHmac("sha256", "gh-secret").update(body).digest("hex")}`
      expect((yield* Verifier.github(["gh-secret"]).verify({ headers: { "x-hub-signature-256": signature }, body })).id).toBeUndefined()
      expect((yield* Verifier.github(["gh-secret"]).verify({ headers: { "x-hub-signature-256": signature, "X-GitHub-Delivery": "d-9" }, body })).id).toBe("d-9")
    }))
})

describe("strict base64 (signatures and keys)", () => {
  // The definition the hand-written check replaced: it must accept exactly the same texts.
  const strictBase64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ .é\u0100"
  it.prop(
    "decodeBase64 accepts exactly the strict base64 texts, and decodes them as node does",
    [fc.oneof(
      fc.string({ unit: fc.constantFrom(...alphabet), maxLength: 48 }),
      fc.uint8Array({ maxLength: 40 }).map((bytes) => Buffer.from(bytes).toString("base64")),
      fc.uint8Array({ maxLength: 40 }).map((bytes) => Buffer.from(bytes).toString("base64").replace(/=+$/, ""))
    )],
    ([text]) => {
      const decoded = decodeBase64(text)
      expect(decoded !== undefined).toBe(strictBase64.test(text))
      if (decoded !== undefined) expect(decoded).toEqual(Buffer.from(text, "base64"))
    },
    { fastCheck: { numRuns: 2000 } }
  )
})
