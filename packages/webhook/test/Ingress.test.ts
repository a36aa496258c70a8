import { createHash } from "node:crypto"
import { Envelope } from "@bulwark/core"
import { Memory, Transport } from "@bulwark/transport"
import { HttpApp, HttpRouter } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Layer, ParseResult, Schema, Stream } from "effect"
import * as Ingress from "../src/Ingress.js"
import * as ReplayGuard from "../src/ReplayGuard.js"
import * as Signing from "../src/Signing.js"
import * as Verifier from "../src/Verifier.js"
import { createServer } from "node:http"

const Invoice = Schema.Struct({ type: Schema.String, data: Schema.Struct({ customer: Schema.String, amount: Schema.Number }) })
const secret = Signing.generateSecret()
const payload = (customer = "cus_1", amount = 42) => new TextEncoder().encode(JSON.stringify({ type: "invoice.paid", data: { customer, amount } }))

/** A publisher that records what it accepted and fails while `failing` is set. */
const recordingPublisher = () => {
  const published: Array<{ topic: string; message: Transport.OutgoingMessage }> = []
  const control = { failing: false }
  const layer = Layer.succeed(Transport.Publisher, {
    publish: (topic, messages) =>
      control.failing
        ? Effect.fail(new Transport.PublishError({ topic, cause: "broker down" }))
        : Effect.sync(() => messages.forEach((message) => published.push({ topic, message })))
  })
  return { published, control, layer }
}

const options = {
  verifier: Verifier.standard([secret], { source: "billing" }),
  schema: Invoice,
  topic: "billing.events",
  type: (data: typeof Invoice.Type) => `com.example.${data.type}`,
  subject: (data: typeof Invoice.Type) => data.data.customer,
  maxBodySize: 4096
}

const router = HttpRouter.empty.pipe(
  Ingress.route("/webhooks/billing", options),
  Ingress.route("/webhooks/github", {
    verifier: Verifier.github(["gh"]),
    schema: Schema.Struct({ action: Schema.String }),
    topic: "github.events",
    type: "com.github.event",
    subject: () => "repo"
  })
)

const post = (url: string, body: Uint8Array | string, headers: Record<string, string>) =>
  Effect.promise(async () => {
    const response = await fetch(url, { method: "POST", body, headers: { "content-type": "application/json", ...headers } })
    return { status: response.status, body: await response.json() as Record<string, unknown>, headers: response.headers }
  })

const signed = (body: Uint8Array, id = `msg_${Math.random().toString(36).slice(2)}`) =>
  Effect.map(Signing.standard([secret], { id, body }), (h) => ({ ...h }))

describe("Ingress", () => {
  it.live("verifies, persists a CloudEvents envelope, then answers 202; a duplicate gets 200 and is not persisted twice", () => {
    const publisher = recordingPublisher()
    return Effect.gen(function*() {
      const { url } = yield* Ingress.listen(router)
      const body = payload()
      const headers = yield* signed(body, "msg_first")
      const first = yield* post(`${url}/webhooks/billing`, body, headers)
      expect(first).toMatchObject({ status: 202, body: { status: "accepted", id: "msg_first" } })
      expect(publisher.published).toHaveLength(1)
      const { topic, message } = publisher.published[0]!
      expect(topic).toBe("billing.events")
      expect(message.id).toBe("msg_first")
      expect(message.key).toBe("cus_1")
      const envelope = yield* Envelope.decode(Invoice)(message.payload)
      expect(envelope).toMatchObject({ id: "msg_first", type: "com.example.invoice.paid", source: "/webhooks/billing", subject: "cus_1" })
      expect(envelope.data).toEqual({ type: "invoice.paid", data: { customer: "cus_1", amount: 42 } })

      // the sender retries with a fresh timestamp and signature: acknowledged, not persisted again
      const again = yield* post(`${url}/webhooks/billing`, body, yield* signed(body, "msg_first"))
      expect(again).toMatchObject({ status: 200, body: { status: "duplicate", id: "msg_first" } })
      expect(publisher.published).toHaveLength(1)
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(publisher.layer, ReplayGuard.layerMemory())))
  })

  it.live("a schema with an async part (nested under a field) decodes on the Effect path: accepted when valid, 400 when not", () => {
    const publisher = recordingPublisher()
    // An async check of the customer (as a lookup would be): the synchronous path cannot run it, anywhere in the tree.
    const KnownCustomer = Schema.transformOrFail(Schema.String, Schema.String, {
      strict: true,
      decode: (customer, _, ast) =>
        Effect.sleep("1 millis").pipe(
          Effect.zipRight(customer.startsWith("cus_") ? Effect.succeed(customer) : Effect.fail(new ParseResult.Type(ast, customer, "unknown customer")))
        ),
      encode: (customer) => Effect.succeed(customer)
    })
    const AsyncInvoice = Schema.Struct({ type: Schema.String, data: Schema.Struct({ customer: KnownCustomer, amount: Schema.Number }) })
    const run = Ingress.process({ ...options, schema: AsyncInvoice, type: "com.example.invoice" })
    return Effect.gen(function*() {
      const valid = payload("cus_9")
      const accepted = yield* run({ headers: yield* signed(valid, "msg_async"), body: valid })
      expect(accepted).toEqual({ id: "msg_async", duplicate: false })
      expect(publisher.published.map((p) => p.message.key)).toEqual(["cus_9"])
      const unknown = payload("someone")
      const refused = yield* Effect.flip(run({ headers: yield* signed(unknown), body: unknown }))
      expect(refused._tag).toBe("MalformedPayload")
      expect(refused.message).toContain("unknown customer")
      expect(publisher.published).toHaveLength(1)
    }).pipe(Effect.provide(Layer.merge(publisher.layer, ReplayGuard.layerMemory())))
  })

  it.live("answers 401 / 400 / 413 / 404 with short machine-readable bodies, persisting nothing", () => {
    const publisher = recordingPublisher()
    return Effect.gen(function*() {
      const { url } = yield* Ingress.listen(router)
      const body = payload()
      const endpoint = `${url}/webhooks/billing`
      const missing = yield* post(endpoint, body, {})
      expect(missing.status).toBe(401)
      expect(missing.body).toEqual({ error: "MissingHeader", message: "missing header webhook-id" })
      const forged = yield* post(endpoint, body, { ...(yield* signed(body)), "webhook-signature": `v1,${Buffer.alloc(32).toString("base64")}` })
      expect(forged).toMatchObject({ status: 401, body: { error: "NoMatchingSignature" } })
      const wrongSecret = yield* Effect.map(Signing.standard([Signing.generateSecret()], { body }), (h) => ({ ...h }))
      expect((yield* post(endpoint, body, wrongSecret)).status).toBe(401)
      const stale = yield* Effect.map(Signing.standard([secret], { body, timestamp: Math.floor(Date.now() / 1000) - 3600 }), (h) => ({ ...h }))
      expect((yield* post(endpoint, body, stale)).body).toMatchObject({ error: "TimestampOutOfTolerance" })

      const notJson = new TextEncoder().encode("{not json")
      const bad = yield* post(endpoint, notJson, yield* signed(notJson))
      expect(bad).toMatchObject({ status: 400, body: { error: "MalformedPayload" } })
      const wrongShape = new TextEncoder().encode(JSON.stringify({ type: "invoice.paid", data: { customer: 1 } }))
      const shape = yield* post(endpoint, wrongShape, yield* signed(wrongShape))
      expect(shape).toMatchObject({ status: 400, body: { error: "MalformedPayload" } })
      expect(String(shape.body.message)).toContain("customer")

      const big = new TextEncoder().encode(JSON.stringify({ type: "x", data: { customer: "c", amount: 1, pad: "x".repeat(5000) } }))
      const tooLarge = yield* post(endpoint, big, yield* signed(big))
      expect(tooLarge).toMatchObject({ status: 413, body: { error: "PayloadTooLarge" } })

      const unknown = yield* Effect.promise(() => fetch(`${url}/webhooks/nobody`, { method: "POST", body: "{}" }))
      expect(unknown.status).toBe(404)
      expect(publisher.published).toHaveLength(0)
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(publisher.layer, ReplayGuard.layerMemory())))
  })

  it.live("a chunked body over the limit (no Content-Length) is refused with 413", () => {
    const publisher = recordingPublisher()
    return Effect.gen(function*() {
      const { port } = yield* Ingress.listen(router)
      const status = yield* Effect.promise(() =>
        new Promise<number>((resolve, reject) => {
          import("node:http").then(({ request }) => {
            const req = request({ host: "127.0.0.1", port, method: "POST", path: "/webhooks/billing", headers: { "transfer-encoding": "chunked" } }, (res) => {
              res.resume()
              resolve(res.statusCode ?? 0)
            })
            req.on("error", reject)
            for (let i = 0; i < 10; i++) req.write("x".repeat(1000))
            req.end()
          }, reject)
        }))
      expect(status).toBe(413)
      expect(publisher.published).toHaveLength(0)
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(publisher.layer, ReplayGuard.layerMemory())))
  })

  it.live("answers 503 when persisting fails and does not record the id, so the retry is persisted", () => {
    const publisher = recordingPublisher()
    return Effect.gen(function*() {
      const { url } = yield* Ingress.listen(router)
      const body = payload("cus_9")
      publisher.control.failing = true
      const failed = yield* post(`${url}/webhooks/billing`, body, yield* signed(body, "msg_retry"))
      expect(failed).toMatchObject({ status: 503, body: { error: "PersistFailed" } })
      expect(failed.headers.get("retry-after")).toBe("5")
      publisher.control.failing = false
      const retried = yield* post(`${url}/webhooks/billing`, body, yield* signed(body, "msg_retry"))
      expect(retried.status).toBe(202)
      expect(publisher.published.map((p) => p.message.id)).toEqual(["msg_retry"])
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(publisher.layer, ReplayGuard.layerMemory())))
  })

  it.live("a duplicate that arrives while the first is being persisted gets 409 (not acknowledged)", () =>
    Effect.gen(function*() {
      const guard = yield* ReplayGuard.ReplayGuard
      const { url } = yield* Ingress.listen(router)
      const body = payload()
      // simulate a concurrent request holding the claim
      expect(yield* guard.claim("billing:msg_busy", "30 seconds")).toBe("claimed")
      const busy = yield* post(`${url}/webhooks/billing`, body, yield* signed(body, "msg_busy"))
      expect(busy).toMatchObject({ status: 409, body: { error: "InFlight" } })
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(recordingPublisher().layer, ReplayGuard.layerMemory()))))

  it.live("GitHub route: dedupes on X-GitHub-Delivery; end to end through the memory transport", () =>
    Effect.gen(function*() {
      const { url } = yield* Ingress.listen(router)
      const body = new TextEncoder().encode(JSON.stringify({ action: "opened" }))
      const headers = { "x-hub-signature-256": Signing.github("gh", body), "x-github-delivery": "gh-1" }
      expect((yield* post(`${url}/webhooks/github`, body, headers)).status).toBe(202)
      expect((yield* post(`${url}/webhooks/github`, body, headers)).status).toBe(200)
      const subscriber = yield* Transport.Subscriber
      const deliveries = yield* subscriber.subscribe("github.events").pipe(Stream.take(1), Stream.runCollect)
      const delivery = Chunk.unsafeHead(deliveries)
      const envelope = yield* Envelope.decode(Schema.Struct({ action: Schema.String }))(delivery.message.payload)
      expect(envelope).toMatchObject({ id: "gh-1", type: "com.github.event", data: { action: "opened" } })
      yield* delivery.ack
      const inspector = yield* Memory.MemoryTransportInspector
      expect(inspector.pending("github.events")).toBe(0)
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(Memory.layer(), ReplayGuard.layerMemory()))))

  it.live("GitHub route: a delivery without X-GitHub-Delivery is accepted and dedupes on the body's SHA-256", () =>
    Effect.gen(function*() {
      const { url } = yield* Ingress.listen(router)
      const body = new TextEncoder().encode(JSON.stringify({ action: "closed" }))
      const headers = { "x-hub-signature-256": Signing.github("gh", body) }
      expect((yield* post(`${url}/webhooks/github`, body, headers)).status).toBe(202)
      expect((yield* post(`${url}/webhooks/github`, body, headers)).status).toBe(200)
      const subscriber = yield* Transport.Subscriber
      const deliveries = yield* subscriber.subscribe("github.events").pipe(Stream.take(1), Stream.runCollect)
      const delivery = Chunk.unsafeHead(deliveries)
      const envelope = yield* Envelope.decode(Schema.Struct({ action: Schema.String }))(delivery.message.payload)
      expect(envelope.id).toBe(createHash("sha256").update(body).digest("hex"))
      yield* delivery.ack
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(Memory.layer(), ReplayGuard.layerMemory()))))

  it.live("Ingress.nodeListener: the same pipeline and answers on a plain node:http server", () => {
    const publisher = recordingPublisher()
    return Effect.gen(function*() {
      const listener = yield* Ingress.nodeListener("/hook", options)
      const server = createServer(listener)
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.sync(() => { server.closeAllConnections(); server.close() })
      )
      const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
      const body = payload("cus_n")
      const headers = yield* signed(body, "msg_node")
      expect(yield* post(`${url}/hook`, body, headers)).toMatchObject({ status: 202, body: { status: "accepted", id: "msg_node" } })
      expect(yield* post(`${url}/hook?x=1`, body, yield* signed(body, "msg_node"))).toMatchObject({ status: 200, body: { status: "duplicate" } })
      expect(yield* post(`${url}/hook`, body, {})).toMatchObject({ status: 401, body: { error: "MissingHeader" } })
      const big = new Uint8Array(5000).fill(32)
      expect(yield* post(`${url}/hook`, big, yield* signed(big))).toMatchObject({ status: 413, body: { error: "PayloadTooLarge" } })
      expect((yield* post(`${url}/other`, body, headers)).status).toBe(404)
      const get = yield* Effect.promise(() => fetch(`${url}/hook`))
      expect(get.status).toBe(405)
      expect(publisher.published.map((p) => p.message.id)).toEqual(["msg_node"])
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(publisher.layer, ReplayGuard.layerMemory())))
  })

  it.live("Ingress.route off node (a web handler, no node request underneath): the body is read through the platform, same answers", () => {
    const publisher = recordingPublisher()
    return Effect.gen(function*() {
      const runtime = yield* Effect.runtime<Transport.Publisher | ReplayGuard.ReplayGuard>()
      const handle = HttpApp.toWebHandlerRuntime(runtime)(HttpRouter.toHttpApp(router).pipe(Effect.flatten))
      const send = (body: Uint8Array, headers: Record<string, string>) =>
        Effect.promise(async () => {
          const response = await handle(new Request("http://ingress.test/webhooks/billing", { method: "POST", body, headers: { "content-type": "application/json", ...headers } }))
          return { status: response.status, body: await response.json() as Record<string, unknown> }
        })
      const body = payload("cus_web")
      const headers = yield* signed(body, "msg_web")
      expect(yield* send(body, headers)).toMatchObject({ status: 202, body: { status: "accepted", id: "msg_web" } })
      expect(yield* send(body, headers)).toMatchObject({ status: 200, body: { status: "duplicate", id: "msg_web" } })
      expect(yield* send(body, {})).toMatchObject({ status: 401, body: { error: "MissingHeader" } })
      const big = new Uint8Array(5000).fill(32)
      expect(yield* send(big, yield* signed(big))).toMatchObject({ status: 413, body: { error: "PayloadTooLarge" } })
      expect(publisher.published.map((p) => p.message.id)).toEqual(["msg_web"])
    }).pipe(Effect.provide(Layer.merge(publisher.layer, ReplayGuard.layerMemory())))
  })
})
