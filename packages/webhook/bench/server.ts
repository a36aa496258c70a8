/**
 * The benchmark's server process, so the load generator does not share its event loop: `bulwark` serves
 * the full ingress (verify → decode → dedupe → persist to the memory transport → 202) as an @effect/platform
 * route, `bulwark-node` the same ingress as a plain node:http listener; `bare` is a plain
 * node:http endpoint that only checks the Standard Webhooks HMAC. Prints the port on stdout.
 */
import { Memory } from "@bulwark/transport"
import { HttpRouter } from "@effect/platform"
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

if (mode === "bare") {
  const key = Buffer.from(secret.slice("whsec_".length), "base64")
  const server = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const id = req.headers["webhook-id"] as string
      const ts = req.headers["webhook-timestamp"] as string
      const given = Buffer.from(String(req.headers["webhook-signature"]).slice(3), "base64")
      const expected = createHmac("sha256", key).update(`${id}.${ts}.`).update(Buffer.concat(chunks)).digest()
      const ok = given.length === expected.length && timingSafeEqual(given, expected)
      res.writeHead(ok ? 202 : 401, { "content-type": "application/json" })
      res.end(ok ? "{\"status\":\"accepted\"}" : "{\"error\":\"NoMatchingSignature\"}")
    })
  })
  server.listen(0, "127.0.0.1", () => console.log((server.address() as { port: number }).port))
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
      yield* Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void)))
      console.log((server.address() as { port: number }).port)
    } else {
      const { port } = yield* Ingress.listen(HttpRouter.empty.pipe(Ingress.route("/webhooks/shop", options)))
      console.log(port)
    }
    yield* Effect.never
  }).pipe(
    Effect.scoped,
    Effect.provide(Layer.merge(Memory.layer(), ReplayGuard.layerMemory())),
    Effect.runPromise
  )
}
