// Bulwark verifies what the official libraries sign, and they verify what Bulwark signs.
import { sign as octokitSign, verify as octokitVerify } from "@octokit/webhooks-methods"
import { describe, expect, it } from "@effect/vitest"
import { Webhook } from "standardwebhooks"
import Stripe from "stripe"
import { Effect, Exit } from "effect"
import * as Signing from "../src/Signing.js"
import * as Verifier from "../src/Verifier.js"

const payload = JSON.stringify({ type: "user.created", timestamp: "2022-11-03T20:26:10.344522Z", data: { id: "u_1", name: "Zoë" } })
const body = new TextEncoder().encode(payload)
const stripe = new Stripe("sk_test_interop")

describe("standardwebhooks interop", () => {
  const secret = Signing.generateSecret()

  it.live("Bulwark verifies the official library's signature", () =>
    Effect.gen(function*() {
      const now = new Date()
      const signature = new Webhook(secret).sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", now, payload)
      const headers = {
        "webhook-id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
        "webhook-signature": signature
      }
      const verified = yield* Verifier.standard([secret]).verify({ headers, body })
      expect(verified.id).toBe("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
      // and refuses it under another secret
      const other = yield* Effect.exit(Verifier.standard([Signing.generateSecret()]).verify({ headers, body }))
      expect(Exit.isFailure(other)).toBe(true)
    }))

  it.live("the official library verifies Bulwark's signature (also with two keys and a bare base64 secret)", () =>
    Effect.gen(function*() {
      const rotated = Signing.generateSecret()
      const headers = yield* Signing.standard([rotated, secret], { body })
      expect(new Webhook(secret).verify(payload, { ...headers })).toEqual(JSON.parse(payload))
      expect(new Webhook(rotated).verify(payload, { ...headers })).toEqual(JSON.parse(payload))
      expect(() => new Webhook(Signing.generateSecret()).verify(payload, { ...headers })).toThrow()
      const bare = secret.slice("whsec_".length)
      const viaBare = yield* Signing.standard([bare], { body })
      expect(new Webhook(secret).verify(payload, { ...viaBare })).toEqual(JSON.parse(payload))
    }))
})

describe("stripe interop", () => {
  const secret = "whsec_test_interop_secret"

  it.live("Bulwark verifies stripe.webhooks.generateTestHeaderString", () =>
    Effect.gen(function*() {
      const header = stripe.webhooks.generateTestHeaderString({ payload, secret })
      const verified = yield* Verifier.stripe([secret]).verify({ headers: { "stripe-signature": header }, body })
      expect(verified.scheme).toBe("stripe")
      const wrong = yield* Effect.exit(Verifier.stripe(["whsec_other"]).verify({ headers: { "stripe-signature": header }, body }))
      expect(Exit.isFailure(wrong)).toBe(true)
    }))

  it.live("stripe.webhooks.constructEvent accepts Bulwark's header", () =>
    Effect.gen(function*() {
      const header = yield* Signing.stripe([secret], body)
      const event = stripe.webhooks.constructEvent(payload, header, secret) as unknown
      expect(event).toEqual(JSON.parse(payload))
      expect(() => stripe.webhooks.constructEvent(payload, header, "whsec_wrong")).toThrow()
    }))
})

describe("@octokit/webhooks-methods interop", () => {
  const secret = "It's a Secret to Everybody"

  it.live("Bulwark verifies octokit's signature", () =>
    Effect.gen(function*() {
      const signature = yield* Effect.promise(() => octokitSign(secret, payload))
      const headers = { "x-hub-signature-256": signature, "x-github-delivery": "d-1" }
      expect((yield* Verifier.github([secret]).verify({ headers, body })).id).toBe("d-1")
    }))

  it.live("octokit verifies Bulwark's signature", () =>
    Effect.gen(function*() {
      const signature = Signing.github(secret, body)
      expect(yield* Effect.promise(() => octokitVerify(secret, payload, signature))).toBe(true)
      expect(yield* Effect.promise(() => octokitVerify("other", payload, signature))).toBe(false)
    }))
})
