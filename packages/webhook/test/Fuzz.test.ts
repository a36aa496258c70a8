// Property-based fuzzing: hostile headers and bodies never throw, never verify without the secret, and
// always get a clear 4xx at the ingress.
import { Transport } from "@bulwark/transport"
import { HttpRouter } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, FastCheck as fc, Layer, Schema, TestClock } from "effect"
import * as Ingress from "../src/Ingress.js"
import * as ReplayGuard from "../src/ReplayGuard.js"
import * as Signing from "../src/Signing.js"
import * as Verifier from "../src/Verifier.js"

const secret = "whsec_" + Buffer.alloc(32, 3).toString("base64")
const pair = Signing.generateKeyPair()
const T0 = 1_700_000_000

const base64Of = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => Buffer.from(b).toString("base64"))
const signatureEntry = fc.oneof(
  base64Of(32).map((s) => `v1,${s}`), // right shape, wrong value
  base64Of(64).map((s) => `v1a,${s}`),
  fc.string().map((s) => `v1,${s}`), // bad base64
  fc.tuple(fc.constantFrom("v0", "v2", "V1", "v1b", ""), base64Of(32)).map(([v, s]) => `${v},${s}`), // wrong versions
  fc.string(), // no comma at all
  base64Of(31).map((s) => `v1,${s}`) // wrong length
)
const hostileHeaders = fc.record({
  "webhook-id": fc.option(fc.oneof(fc.string(), fc.constant("msg_1"), fc.constant("a.b")), { nil: undefined }),
  "webhook-timestamp": fc.option(fc.oneof(
    fc.integer({ min: T0 - 1000, max: T0 + 1000 }).map(String),
    fc.string(),
    fc.constantFrom("", "-1", "1e9", "1700000000.5", " 1700000000", "99999999999999999999")
  ), { nil: undefined }),
  "webhook-signature": fc.option(fc.array(signatureEntry, { maxLength: 5 }).map((a) => a.join(" ")), { nil: undefined })
}).map((h) => Object.fromEntries(Object.entries(h).filter(([, v]) => v !== undefined)) as Record<string, string>)
const body = fc.oneof(fc.uint8Array({ maxLength: 2048 }), fc.json().map((j) => new TextEncoder().encode(j)))

const verifiers = [Verifier.standard([secret]), Verifier.standard([pair.publicKey]), Verifier.stripe([secret]), Verifier.github([secret])]

/** A verification exit must be a typed failure: no success, no defect, no interruption. */
const expectRefused = (exit: Exit.Exit<unknown, { _tag: string }>) => {
  expect(Exit.isFailure(exit)).toBe(true)
  if (Exit.isFailure(exit)) {
    expect(Cause.isFailType(exit.cause)).toBe(true)
  }
}

describe("fuzzing the verifiers", () => {
  it.effect.prop("random headers and bodies never verify and never throw", [hostileHeaders, body, fc.integer({ min: -600, max: 600 })], ([headers, payload, skew]) =>
    Effect.gen(function*() {
      yield* TestClock.setTime((T0 + skew) * 1000)
      const stripeLike = { ...headers, "stripe-signature": `t=${headers["webhook-timestamp"] ?? ""},v1=${headers["webhook-signature"] ?? ""}` }
      const githubLike = { ...headers, "x-hub-signature-256": `sha256=${headers["webhook-signature"] ?? ""}`, "x-github-delivery": headers["webhook-id"] ?? "" }
      for (const verifier of verifiers) {
        const request = { headers: verifier.scheme === "stripe" ? stripeLike : verifier.scheme === "github" ? githubLike : headers, body: payload }
        expectRefused(yield* Effect.exit(verifier.verify(request)))
      }
    }), { fastCheck: { numRuns: 100 } })

  it.effect.prop(
    "a genuine signature verifies exactly when nothing was tampered with and the clock is within tolerance",
    [body, fc.integer({ min: -900, max: 900 }), fc.constantFrom("none", "body", "id", "timestamp", "signature"), fc.boolean()],
    ([payload, skew, tamper, asymmetric]) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(T0 * 1000)
        const signed = { ...(yield* Signing.standard([asymmetric ? pair.secretKey : secret], { id: "msg_fuzz", body: payload })) }
        let tampered = payload
        const headers = { ...signed }
        switch (tamper) {
          case "body":
            tampered = new Uint8Array([...payload, 0x20])
            break
          case "id":
            headers["webhook-id"] = "msg_fuzz2"
            break
          case "timestamp":
            headers["webhook-timestamp"] = String(T0 + 1)
            break
          case "signature": {
            const [version, sig] = signed["webhook-signature"].split(",")
            const bytes = Buffer.from(sig!, "base64")
            bytes[0] ^= 1
            headers["webhook-signature"] = `${version},${bytes.toString("base64")}`
          }
        }
        yield* TestClock.setTime((T0 + skew) * 1000)
        const exit = yield* Effect.exit(Verifier.standard([asymmetric ? pair.publicKey : secret]).verify({ headers, body: tampered }))
        const shouldPass = tamper === "none" && Math.abs(skew) <= 300
        if (shouldPass) expect(Exit.isSuccess(exit)).toBe(true)
        else expectRefused(exit)
      }),
    { fastCheck: { numRuns: 100 } }
  )

  it.effect("a replayed GitHub delivery is refused after the first", () =>
    Effect.gen(function*() {
      const verifier = yield* Verifier.withReplayGuard(Verifier.github([secret]))
      const payloads = fc.sample(fc.uint8Array({ maxLength: 256 }), 50)
      for (const [i, payload] of payloads.entries()) {
        const headers = { "x-hub-signature-256": Signing.github(secret, payload), "x-github-delivery": `d-${i}` }
        expect(Exit.isSuccess(yield* Effect.exit(verifier.verify({ headers, body: payload })))).toBe(true)
        const replay = yield* Effect.exit(verifier.verify({ headers, body: payload }))
        expectRefused(replay)
      }
    }).pipe(Effect.provide(ReplayGuard.layerMemory())))
})

const Payload = Schema.Struct({ kind: Schema.String })
const published: Array<string> = []
const publisher = Layer.succeed(Transport.Publisher, {
  publish: (_topic, messages) => Effect.sync(() => messages.forEach((m) => published.push(m.id)))
})
const ingressOptions = {
  verifier: Verifier.standard([secret]),
  schema: Payload,
  topic: "fuzz",
  type: "com.example.fuzz",
  subject: (data: typeof Payload.Type) => data.kind,
  maxBodySize: 1024
}

describe("fuzzing the ingress", () => {
  const request = fc.oneof(
    // hostile: random headers, maybe oversized body
    fc.record({ headers: hostileHeaders, body: fc.oneof(body, fc.uint8Array({ minLength: 1025, maxLength: 3000 })), sign: fc.constant(false) }),
    // genuinely signed, but the body may be non-JSON, the wrong shape, or too large
    fc.record({
      headers: fc.constant({} as Record<string, string>),
      body: fc.oneof(
        fc.uint8Array({ maxLength: 1500 }),
        fc.json().map((j) => new TextEncoder().encode(j)),
        fc.string({ minLength: 1100, maxLength: 1500 }).map((s) => new TextEncoder().encode(JSON.stringify({ kind: s })))
      ),
      sign: fc.constant(true)
    })
  )

  it.live("every hostile request gets a clear 4xx with a JSON error body over HTTP; nothing bogus is persisted", () =>
    Effect.gen(function*() {
      const { url } = yield* Ingress.listen(HttpRouter.empty.pipe(Ingress.route("/in", ingressOptions)))
      published.length = 0
      let accepted = 0
      for (const [i, sample] of fc.sample(request, { numRuns: 100, seed: 42 }).entries()) {
        const headers = sample.sign
          ? { ...(yield* Signing.standard([secret], { id: `msg_${i}`, body: sample.body })) }
          : sample.headers
        const response = yield* Effect.promise(async () => {
          const res = await fetch(`${url}/in`, { method: "POST", body: sample.body, headers })
          return { status: res.status, body: await res.json() as { error?: string; message?: string; status?: string } }
        })
        let valid = false
        try {
          valid = sample.sign && sample.body.length <= 1024 && typeof JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(sample.body))?.kind === "string"
        } catch {
          valid = false
        }
        if (valid) {
          expect(response.status).toBe(202)
          accepted++
        } else {
          expect(response.status, JSON.stringify(response.body)).toBeGreaterThanOrEqual(400)
          expect(response.status).toBeLessThan(500)
          expect(typeof response.body.error).toBe("string")
          expect(typeof response.body.message).toBe("string")
          if (!sample.sign) expect([401, 413]).toContain(response.status)
        }
      }
      expect(published).toHaveLength(accepted)
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(publisher, ReplayGuard.layerMemory()))))
})
