/**
 * The benchmark's server process, so the load generator does not share its event loop: `bulwark` serves
 * the full ingress (verify → decode → dedupe → persist to the memory transport → 202) as an @effect/platform
 * route, `bulwark-node` the same ingress as a plain node:http listener; `bare` is a plain
 * node:http endpoint that only checks the Standard Webhooks HMAC. Prints the port on stdout.
 */
import { Memory } from "@bulwark/transport"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect, Layer, Schema } from "effect"
import { createHmac, timingSafeEqual } from "node:crypto"
import { createServer } from "node:http"
import * as Ingress from "../src/Ingress.js"
import * as ReplayGuard from "../src/ReplayGuard.js"
import * as Verifier from "../src/Verifier.js"

const secret = process.env.BENCH_SECRET!
const mode = process.argv[2]
// Exit normally on a signal so diagnostics (e.g. --cpu-prof) are written.
process.on("SIGTERM", () => process.exit(0))

// The server's own CPU time per answered request, independent of what else runs on the machine: a line on
// stdin starts a measurement (after the warm-up), the next one ends it and prints `{ cpuMicros, requests }`.
let answered = 0
let mark: { cpu: NodeJS.CpuUsage; answered: number } | undefined
const countAnswers = (server: import("node:http").Server) => server.on("request", (_req, res) => res.on("finish", () => answered++))
process.stdin.setEncoding("utf8").on("data", () => {
  if (mark === undefined) mark = { cpu: process.cpuUsage(), answered }
  else {
    const cpu = process.cpuUsage(mark.cpu)
    process.stdout.write(JSON.stringify({ cpuMicros: cpu.user + cpu.system, userMicros: cpu.user, systemMicros: cpu.system, requests: answered - mark.answered }) + "\n")
    mark = undefined
  }
})

const key = Buffer.from(secret.slice("whsec_".length), "base64")
// The bare check: the Standard Webhooks HMAC over `{id}.{timestamp}.{body}`, nothing else.
const bareCheck = (headers: import("node:http").IncomingHttpHeaders, body: Buffer): boolean => {
  const id = headers["webhook-id"] as string
  const ts = headers["webhook-timestamp"] as string
  const given = Buffer.from(String(headers["webhook-signature"]).slice(3), "base64")
  const expected = createHmac("sha256", key).update(`${id}.${ts}.`).update(body).digest()
  return given.length === expected.length && timingSafeEqual(given, expected)
}

if (mode === "bare") {
  const server = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const ok = bareCheck(req.headers, Buffer.concat(chunks))
      res.writeHead(ok ? 202 : 401, { "content-type": "application/json" })
      res.end(ok ? "{\"status\":\"accepted\"}" : "{\"error\":\"NoMatchingSignature\"}")
    })
  })
  countAnswers(server)
  server.listen(0, "127.0.0.1", () => console.log((server.address() as { port: number }).port))
} else if (mode === "bare-platform") {
  // The same bare check as an @effect/platform route on the same node server: what the platform itself costs.
  const app = HttpRouter.empty.pipe(HttpRouter.post(
    "/webhooks/shop",
    Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
      Effect.map(Effect.orDie(request.arrayBuffer), (body) =>
        bareCheck(request.headers, Buffer.from(body))
          ? HttpServerResponse.text("{\"status\":\"accepted\"}", { status: 202, contentType: "application/json" })
          : HttpServerResponse.text("{\"error\":\"NoMatchingSignature\"}", { status: 401, contentType: "application/json" })))
  ))
  Effect.gen(function*() {
    const { port } = yield* Ingress.listen(Effect.tap(app, () => void answered++))
    console.log(port)
    yield* Effect.never
  }).pipe(Effect.scoped, Effect.runPromise)
} else {
  const Order = Schema.Struct({ type: Schema.String, data: Schema.Struct({ orderId: Schema.String, amount: Schema.Number }) })
  const options = {
    verifier: Verifier.standard([secret], { source: "shop" }),
    schema: Order,
    topic: "shop.events",
    type: "com.example.order",
    subject: (order: typeof Order.Type) => order.data.orderId
  }
  Effect.gen(function*() {
    if (mode === "bulwark-node") {
      const listener = yield* Ingress.nodeListener("/webhooks/shop", options)
      const server = createServer(listener)
      countAnswers(server)
      yield* Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void)))
      console.log((server.address() as { port: number }).port)
    } else {
      const app = HttpRouter.empty.pipe(Ingress.route("/webhooks/shop", options))
      const { port } = yield* Ingress.listen(Effect.tap(app, () => void answered++))
      console.log(port)
    }
    yield* Effect.never
  }).pipe(
    Effect.scoped,
    // Nothing consumes the topic here: a capacity above what a run publishes keeps publishers from waiting.
    Effect.provide(Layer.merge(Memory.layer({ capacity: 10_000_000 }), ReplayGuard.layerMemory())),
    Effect.runPromise
  )
}
