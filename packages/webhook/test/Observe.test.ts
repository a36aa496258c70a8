import { Observe } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { createServer } from "node:http"
import * as Ingress from "../src/Ingress.js"
import * as ReplayGuard from "../src/ReplayGuard.js"
import * as Sender from "../src/Sender.js"
import * as Signing from "../src/Signing.js"
import * as Verifier from "../src/Verifier.js"

const secret = Signing.generateSecret()
const body = new TextEncoder().encode(JSON.stringify({ type: "invoice.paid", amount: 42 }))

/** Signed Standard Webhooks headers, as a plain header record. */
const sign = (id: string, signedBody: Uint8Array) =>
  Effect.map(Signing.standard([secret], { id, body: signedBody }), (headers): Record<string, string> => ({ ...headers }))

const recorder = () => {
  const events: Array<Observe.Event> = []
  return { events, observer: (event: Observe.Event) => void events.push(event) }
}

const publisher = Layer.succeed(Transport.Publisher, { publish: () => Effect.void })

/** A local endpoint answering every request with `status`. */
const endpoint = (status: number) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ url: string; close: () => void }>((resolve) => {
        const server = createServer((req, res) => {
          req.resume()
          req.on("end", () => {
            res.writeHead(status)
            res.end()
          })
        })
        server.listen(0, "127.0.0.1", () => {
          const { port } = server.address() as { port: number }
          resolve({
            url: `http://127.0.0.1:${port}`,
            close: () => {
              server.closeAllConnections()
              server.close()
            }
          })
        })
      })
    ),
    (s) => Effect.sync(s.close)
  )

describe("Webhook events", () => {
  it.effect("the verifier announces each result: ok with the id, or the error's tag", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const verifier = Verifier.standard([secret], { source: "billing" })
      const headers = yield* sign("msg_1", body)
      yield* Effect.gen(function*() {
        yield* verifier.verify({ headers, body })
        yield* Effect.either(verifier.verify({ headers, body: new TextEncoder().encode("tampered") }))
      }).pipe(Observe.observe(observer))
      expect(events).toEqual([
        { source: "webhook", kind: "verified", attributes: { scheme: "standard", source: "billing", ok: true, webhookId: "msg_1" } },
        {
          source: "webhook",
          kind: "verified",
          attributes: { scheme: "standard", source: "billing", ok: false, reason: "NoMatchingSignature", webhookId: "msg_1" }
        }
      ])
    }))

  it.effect("behind a replay guard, one verified event per request; a replay is refused with reason Replayed", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const verifier = yield* Verifier.withReplayGuard(Verifier.standard([secret]))
      const headers = yield* sign("msg_2", body)
      yield* Effect.gen(function*() {
        yield* verifier.verify({ headers, body })
        yield* Effect.either(verifier.verify({ headers, body }))
      }).pipe(Observe.observe(observer))
      expect(events.map((e) => [e.kind, e.attributes.ok, e.attributes.reason, e.attributes.webhookId])).toEqual([
        ["verified", true, undefined, "msg_2"],
        ["verified", false, "Replayed", "msg_2"]
      ])
    }).pipe(Effect.provide(ReplayGuard.layerMemory())))

  it.effect("ingress announces accepted (and duplicates) and rejected with the answer's status", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const process = Ingress.process({
        verifier: Verifier.standard([secret], { source: "billing" }),
        schema: Schema.Struct({ type: Schema.String, amount: Schema.Number }),
        topic: "billing.events",
        type: "invoice.paid",
        subject: () => "cus_1"
      })
      const headers = yield* sign("msg_3", body)
      const wrongShape = new TextEncoder().encode(JSON.stringify({ type: "x" }))
      yield* Effect.gen(function*() {
        yield* process({ headers, body })
        yield* process({ headers, body })
        yield* Effect.either(process({ headers: { ...headers, "webhook-signature": "v1,AAAA" }, body }))
        yield* Effect.either(process({ headers: yield* sign("msg_4", wrongShape), body: wrongShape }))
      }).pipe(Observe.observe(observer))
      expect(events.filter((e) => e.kind !== "verified").map((e) => e.attributes)).toEqual([
        { webhookId: "msg_3", topic: "billing.events", duplicate: false },
        { webhookId: "msg_3", topic: "billing.events", duplicate: true },
        { status: 401, reason: "NoMatchingSignature", webhookId: undefined },
        { status: 400, reason: "MalformedPayload", webhookId: undefined }
      ])
      expect(events.filter((e) => e.kind === "verified").map((e) => e.attributes.ok)).toEqual([true, true, false, true])
    }).pipe(Effect.provide(Layer.merge(publisher, ReplayGuard.layerMemory()))))

  it.scoped("the sender announces every attempt, then exhausted; a 2xx is delivered; a 410 disables", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const failing = yield* endpoint(503)
      const ok = yield* endpoint(204)
      const gone = yield* endpoint(410)
      const sender = yield* Sender.make({ allow: ["127.0.0.1"], schedule: ["0 millis", "0 millis", "0 millis"] })
      const message = { id: "msg_out", body }
      yield* Effect.gen(function*() {
        yield* Effect.either(sender.send({ id: "ep-down", url: failing.url, secrets: [secret] }, message))
        yield* sender.send({ id: "ep-ok", url: ok.url, secrets: [secret] }, message)
        yield* Effect.either(sender.send({ id: "ep-gone", url: gone.url, secrets: [secret] }, message))
      }).pipe(Observe.observe(observer))
      expect(events.every((e) => e.source === "sender")).toBe(true)
      expect(events.map((e) => [e.kind, e.attributes.endpoint, e.attributes.attempt, e.attributes.outcome, e.attributes.status])).toEqual([
        ["attempt", "ep-down", 1, "failed", 503],
        ["attempt", "ep-down", 2, "failed", 503],
        ["attempt", "ep-down", 3, "failed", 503],
        ["exhausted", "ep-down", undefined, undefined, undefined],
        ["attempt", "ep-ok", 1, "delivered", 204],
        ["delivered", "ep-ok", undefined, undefined, undefined],
        ["attempt", "ep-gone", 1, "gone", 410],
        ["disabled", "ep-gone", undefined, undefined, undefined]
      ])
      expect(events.every((e) => e.attributes.messageId === "msg_out")).toBe(true)
    }))

  it.live("a body refused before it reaches process (413 on Content-Length) is announced too", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const listener = yield* Ingress.nodeListener("/hook", {
        verifier: Verifier.standard([secret]),
        schema: Schema.Unknown,
        topic: "t",
        type: "x",
        subject: () => "s",
        maxBodySize: 8
      }).pipe(Observe.observe(observer))
      const server = createServer(listener)
      const port = yield* Effect.promise(() =>
        new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)))
      )
      const status = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/hook`, { method: "POST", body: "x".repeat(100) }).then((r) => r.status)
      ).pipe(Effect.ensuring(Effect.sync(() => {
        server.closeAllConnections()
        server.close()
      })))
      expect(status).toBe(413)
      expect(events).toEqual([{ source: "webhook", kind: "rejected", attributes: { status: 413, reason: "PayloadTooLarge", webhookId: undefined } }])
    }).pipe(Effect.provide(Layer.merge(publisher, ReplayGuard.layerMemory()))))
})
