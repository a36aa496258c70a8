// Ingress under hostile or broken senders: slow bodies, slow headers and absurdly nested JSON must get a
// bounded answer from the documented set, and never a 5xx that a provider would retry forever.
import { Transport } from "@bulwark/transport"
import { HttpRouter } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Schema } from "effect"
import { createServer } from "node:http"
import net from "node:net"
import * as Ingress from "../src/Ingress.js"
import * as ReplayGuard from "../src/ReplayGuard.js"
import * as Signing from "../src/Signing.js"
import * as Verifier from "../src/Verifier.js"

/** Every status the ingress (and node:http in front of it) may answer; see docs/webhooks.md. */
const documented = new Set([200, 202, 400, 401, 404, 405, 408, 409, 413, 431, 503])

const published: Array<string> = []
const publisher = Layer.succeed(Transport.Publisher, {
  publish: (_topic, messages) => Effect.sync(() => void messages.forEach((m) => published.push(m.id)))
})
const services = Layer.merge(publisher, ReplayGuard.layerMemory())

const Action = Schema.Struct({ action: Schema.String })
interface Tree {
  readonly children: ReadonlyArray<Tree>
}
const Tree: Schema.Schema<Tree> = Schema.Struct({ children: Schema.Array(Schema.suspend((): Schema.Schema<Tree> => Tree)) })

const base = { verifier: Verifier.github(["gh"]), topic: "t", type: "e", subject: () => "s" }
const router = HttpRouter.empty.pipe(
  Ingress.route("/slow", { ...base, schema: Action, bodyTimeout: "500 millis" }),
  Ingress.route("/deep", { ...base, schema: Action }),
  // depth limit lifted: the bounded rendering and the stack-overflow guard must still answer 400
  Ingress.route("/deep-unlimited", { ...base, schema: Action, maxDepth: 1_000_000 }),
  Ingress.route("/deep-recursive", { ...base, schema: Tree, maxDepth: 1_000_000, maxBodySize: 4 * 1024 * 1024 }),
  Ingress.route("/tree", { ...base, schema: Tree, maxBodySize: 4 * 1024 * 1024 })
)

const post = (url: string, body: string) =>
  Effect.promise(async () => {
    const bytes = new TextEncoder().encode(body)
    const response = await fetch(url, {
      method: "POST",
      body: bytes,
      headers: { "content-type": "application/json", "x-hub-signature-256": Signing.github("gh", bytes) }
    })
    return { status: response.status, headers: response.headers, text: await response.text() }
  })

/** Opens a raw socket, sends `head` then one body byte every `every` ms; answers what came back and when the socket closed. */
const dribble = (port: number, head: string, every: number, give: number) =>
  Effect.promise(() =>
    new Promise<{ readonly response: string; readonly closedAfter: number | undefined }>((resolve) => {
      const started = Date.now()
      const socket = net.connect(port, "127.0.0.1")
      let response = ""
      let timer: NodeJS.Timeout | undefined
      const finish = (closedAfter: number | undefined) => {
        clearInterval(timer)
        clearTimeout(giveUp)
        socket.destroy()
        resolve({ response, closedAfter })
      }
      const giveUp = setTimeout(() => finish(undefined), give)
      socket.on("data", (chunk) => response += chunk.toString("latin1"))
      socket.on("close", () => finish(Date.now() - started))
      socket.on("error", () => undefined)
      socket.on("connect", () => {
        socket.write(head)
        if (every > 0) timer = setInterval(() => socket.writable && socket.write("["), every)
      })
    }))

const slowBodyHead = (path: string) =>
  `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n` +
  `X-Hub-Signature-256: sha256=${"0".repeat(64)}\r\n\r\n`

const nested = (depth: number) => `{"action":${"[".repeat(depth)}${"]".repeat(depth)}}`
const nestedTree = (depth: number) => `${`{"children":[`.repeat(depth)}${"]}".repeat(depth)}`

describe("Ingress limits", () => {
  it("defaults: a 10 s body timeout, 128 levels of nesting, server timeouts below node's", () => {
    expect(Duration.toMillis(Ingress.defaultBodyTimeout)).toBe(10_000)
    expect(Ingress.defaultMaxDepth).toBe(128)
    expect(Ingress.serverOptions.headersTimeout).toBeLessThanOrEqual(Ingress.serverOptions.requestTimeout)
    expect(Ingress.serverOptions.requestTimeout).toBeGreaterThan(Duration.toMillis(Ingress.defaultBodyTimeout))
  })

  it.live("a body that dribbles in is answered 408 and its connection closed (Ingress.listen)", () =>
    Effect.gen(function*() {
      const { port } = yield* Ingress.listen(router)
      const { response, closedAfter } = yield* dribble(port, slowBodyHead("/slow"), 100, 8_000)
      expect(response).toMatch(/^HTTP\/1\.1 408 /)
      expect(response.toLowerCase()).toContain("connection: close")
      expect(response).toContain(`"error":"BodyTimeout"`)
      expect(closedAfter).toBeDefined()
      expect(closedAfter!).toBeLessThan(5_000)
    }).pipe(Effect.scoped, Effect.provide(services)))

  it.live("a body that dribbles in is answered 408 and its connection closed (Ingress.nodeListener)", () =>
    Effect.gen(function*() {
      const listener = yield* Ingress.nodeListener("/hook", { ...base, schema: Action, bodyTimeout: "500 millis" })
      const server = createServer(Ingress.serverOptions, listener)
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.sync(() => { server.closeAllConnections(); server.close() })
      )
      const port = (server.address() as net.AddressInfo).port
      const { response, closedAfter } = yield* dribble(port, slowBodyHead("/hook"), 100, 8_000)
      expect(response).toMatch(/^HTTP\/1\.1 408 /)
      expect(response).toContain(`"error":"BodyTimeout"`)
      expect(closedAfter).toBeDefined()
      expect(closedAfter!).toBeLessThan(5_000)
    }).pipe(Effect.scoped, Effect.provide(services)))

  it.live("slow bodies started at different times each get their 408, with quick requests finishing between them", () =>
    Effect.gen(function*() {
      // Reads of one timeout share a deadline queue: a read behind finished ones, or behind another slow one,
      // still times out at its own deadline.
      const listener = yield* Ingress.nodeListener("/hook", { ...base, schema: Action, bodyTimeout: "600 millis" })
      const server = createServer(Ingress.serverOptions, listener)
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.sync(() => { server.closeAllConnections(); server.close() })
      )
      const port = (server.address() as net.AddressInfo).port
      const url = `http://127.0.0.1:${port}/hook`
      // Distinct ids per batch: a repeated id would be answered as a duplicate (200) by the replay guard.
      const quick = (batch: string) => Effect.forEach([1, 2, 3], (i) => post(url, `{"action":"quick-${batch}-${i}"}`))
      const [first, quickAnswers, [laterAnswers, second]] = yield* Effect.all([
        dribble(port, slowBodyHead("/hook"), 100, 8_000),
        Effect.zipRight(Effect.sleep("100 millis"), quick("a")),
        Effect.zipRight(Effect.sleep("300 millis"), Effect.zip(quick("b"), dribble(port, slowBodyHead("/hook"), 100, 8_000)))
      ], { concurrency: "unbounded" })
      expect([...quickAnswers, ...laterAnswers].map((answer) => answer.status)).toEqual([202, 202, 202, 202, 202, 202])
      // The quick ones were persisted.
      expect(published).toHaveLength(6)
      for (const slow of [first, second]) {
        expect(slow.response).toMatch(/^HTTP\/1\.1 408 /)
        expect(slow.response).toContain(`"error":"BodyTimeout"`)
        expect(slow.closedAfter).toBeDefined()
        expect(slow.closedAfter!).toBeLessThan(5_000)
      }
      // The other tests here expect to start with nothing published, whatever happened above.
    }).pipe(Effect.ensuring(Effect.sync(() => { published.length = 0 })), Effect.scoped, Effect.provide(services)))

  it.live("headers that never finish are answered 408 by the server's headersTimeout", () =>
    Effect.gen(function*() {
      const { port } = yield* Ingress.listen(router, { headersTimeout: "1 second", requestTimeout: "2 seconds" })
      const { response, closedAfter } = yield* dribble(port, "POST /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", 0, 8_000)
      expect(response).toMatch(/^HTTP\/1\.1 408 /)
      expect(closedAfter).toBeDefined()
      expect(closedAfter!).toBeLessThan(5_000)
    }).pipe(Effect.scoped, Effect.provide(services)))

  for (const depth of [3_000, 100_000]) {
    it.live(`a validly signed body nested ${depth} levels deep gets 400 with a bounded message, on every route`, () =>
      Effect.gen(function*() {
        const { url } = yield* Ingress.listen(router)
        for (const [path, body] of [
          ["/deep", nested(depth)],
          ["/deep-unlimited", nested(depth)],
          ["/tree", nestedTree(depth)]
        ] as const) {
          const answer = yield* post(`${url}${path}`, body)
          expect(documented.has(answer.status)).toBe(true)
          expect({ path, status: answer.status, retryAfter: answer.headers.get("retry-after") }).toEqual({ path, status: 400, retryAfter: null })
          const parsed = JSON.parse(answer.text) as { error: string; message: string }
          expect(parsed.error).toBe("MalformedPayload")
          expect(parsed.message.length).toBeLessThan(1_200)
        }
        expect(published).toEqual([])
      }).pipe(Effect.scoped, Effect.provide(services)))
  }

  it.live("with the depth limit lifted, a recursive schema that overflows the stack still gets 400, never 5xx", () =>
    Effect.gen(function*() {
      const { url } = yield* Ingress.listen(router)
      for (const depth of [3_000, 100_000]) {
        const answer = yield* post(`${url}/deep-recursive`, nestedTree(depth))
        expect(answer.status).toBe(400)
        expect(answer.headers.get("retry-after")).toBeNull()
        const parsed = JSON.parse(answer.text) as { error: string; message: string }
        expect(parsed.error).toBe("MalformedPayload")
        expect(parsed.message).toContain("too deeply nested")
        expect(parsed.message.length).toBeLessThan(1_200)
      }
    }).pipe(Effect.scoped, Effect.provide(services)))

  it.live("nesting up to the limit is still accepted; a long schema complaint is cut to a bounded message", () =>
    Effect.gen(function*() {
      const { url } = yield* Ingress.listen(router)
      // 60 trees are 120 levels (an object and an array each), under the default 128
      expect((yield* post(`${url}/tree`, nestedTree(60))).status).toBe(202)
      const many = JSON.stringify({ children: Array.from({ length: 5_000 }, () => ({ children: "nope" })) })
      const answer = yield* post(`${url}/tree`, many)
      expect(answer.status).toBe(400)
      const message = (JSON.parse(answer.text) as { message: string }).message
      expect(message.length).toBeLessThan(1_200)
      expect(message).toMatch(/more characters\)$/)
    }).pipe(Effect.scoped, Effect.provide(services)))
})
