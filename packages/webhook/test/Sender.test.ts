import { Failure } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import { createServer, type IncomingHttpHeaders } from "node:http"
import { Webhook } from "standardwebhooks"
import * as RateLimiter from "@bulwark/resilience/RateLimiter"
import * as RateLimiterStore from "@bulwark/resilience/RateLimiterStore"
import * as Breaker from "../src/Breaker.js"
import * as Sender from "../src/Sender.js"
import * as Signing from "../src/Signing.js"
import * as Ssrf from "../src/Ssrf.js"

interface Hit {
  readonly url: string
  readonly headers: IncomingHttpHeaders
  readonly body: string
}
type Reply = { status: number; headers?: Record<string, string>; body?: string } | "hang"

/** A local endpoint on 127.0.0.1 answering with `reply(hitNumber)`, recording every request. */
const endpointServer = (reply: (n: number, hit: Hit) => Reply) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ url: string; hits: Array<Hit>; waitFor: (n: number) => Promise<void>; close: () => void }>((resolve) => {
        const hits: Array<Hit> = []
        const waiters: Array<{ n: number; resolve: () => void }> = []
        const server = createServer((req, res) => {
          const chunks: Array<Buffer> = []
          req.on("data", (c: Buffer) => chunks.push(c))
          req.on("end", () => {
            const hit = { url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString() }
            hits.push(hit)
            for (const w of waiters.filter((w) => hits.length >= w.n)) w.resolve()
            const r = reply(hits.length, hit)
            if (r === "hang") return
            res.writeHead(r.status, r.headers ?? {})
            res.end(r.body ?? "")
          })
        })
        server.listen(0, "127.0.0.1", () => {
          const address = server.address() as { port: number }
          resolve({
            url: `http://127.0.0.1:${address.port}`,
            hits,
            waitFor: (n) => hits.length >= n ? Promise.resolve() : new Promise((r) => waiters.push({ n, resolve: r })),
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

const secret = Signing.generateSecret()
const message = { id: "msg_egress_1", body: new TextEncoder().encode(JSON.stringify({ type: "order.shipped", data: { id: 7 } })) }
const allowLoopback = { allow: ["127.0.0.1"] }
/** Lets real I/O (the local server, the socket) make progress while the TestClock stands still. */
const realPause = (ms = 20) => Effect.promise(() => new Promise((r) => setTimeout(r, ms)))

describe("Sender", () => {
  it.scopedLive("paces requests by a shared rate limit: an attempt without a permit is recorded, no request sent, and made again once a permit is free without using up the schedule", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer(() => ({ status: 204 }))
      // One permit per 1.5 s per endpoint, shared by two senders (two processes over one Redis or SQL limit).
      const limiter = yield* RateLimiter.make("partner-api", {
        limit: { kind: "tokenBucket", permits: 1, per: "1500 millis" },
        maxWait: "100 millis"
      })
      const rateLimit = { limiter }
      const first = yield* Sender.make({ ...allowLoopback, rateLimit })
      // A single scheduled attempt: were a refused permit counted, the message would be exhausted unsent.
      const second = yield* Sender.make({ ...allowLoopback, rateLimit, schedule: [0] })
      const endpoint = { id: "ep-paced", url: `${server.url}/hook`, secrets: [secret] }
      expect((yield* first.send(endpoint, message)).attempts[0]!.outcome).toBe("delivered")
      const delivered = yield* second.send(endpoint, { ...message, id: "msg_paced_2" })
      expect(delivered.attempts.map((a) => [a.attempt, a.outcome])).toEqual([[1, "rate-limited"], [2, "delivered"]])
      expect(delivered.attempts[0]!.retryAfterMillis).toBeGreaterThan(1_000)
      // The refused attempt sent nothing; the second request went out once the next permit was free.
      expect(server.hits.map((h) => h.headers["webhook-id"])).toEqual([message.id, "msg_paced_2"])
      expect(delivered.attempts[1]!.at - delivered.attempts[0]!.at).toBeGreaterThanOrEqual(1_000)
    }).pipe(Effect.provide(RateLimiterStore.layerMemory)))

  it.scoped("delivers signed with Standard Webhooks (the official library verifies it) and records the attempt", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const server = yield* endpointServer(() => ({ status: 204 }))
      const sender = yield* Sender.make(allowLoopback)
      const fiber = yield* Effect.fork(sender.send({ id: "ep1", url: `${server.url}/hook`, secrets: [secret] }, message))
      const delivered = yield* Fiber.join(fiber)
      expect(delivered.attempts).toHaveLength(1)
      expect(delivered.attempts[0]).toMatchObject({ outcome: "delivered", status: 204, attempt: 1, endpointId: "ep1" })
      const hit = server.hits[0]!
      expect(hit.headers["webhook-id"]).toBe("msg_egress_1")
      expect(new Webhook(secret).verify(hit.body, hit.headers as Record<string, string>)).toEqual({ type: "order.shipped", data: { id: 7 } })
      expect(yield* sender.history("msg_egress_1")).toEqual(delivered.attempts)
    }))

  it.scoped("retries on the schedule (TestClock), treating only 2xx as success", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer((n) => n < 3 ? { status: n === 1 ? 500 : 404, body: "nope" } : { status: 200, body: "ok" })
      const sender = yield* Sender.make(allowLoopback)
      const fiber = yield* Effect.fork(sender.send({ id: "ep", url: server.url, secrets: [secret] }, message))
      yield* Effect.promise(() => server.waitFor(1))
      yield* realPause()
      yield* TestClock.adjust("4 seconds")
      yield* realPause()
      expect(server.hits).toHaveLength(1)
      yield* TestClock.adjust("1 second")
      yield* Effect.promise(() => server.waitFor(2))
      yield* realPause()
      yield* TestClock.adjust("4 minutes")
      yield* realPause()
      expect(server.hits).toHaveLength(2)
      yield* TestClock.adjust("1 minute")
      const delivered = yield* Fiber.join(fiber)
      expect(delivered.attempts.map((a) => [a.outcome, a.status])).toEqual([["failed", 500], ["failed", 404], ["delivered", 200]])
      expect(delivered.attempts.map((a) => a.at - delivered.attempts[0]!.at)).toEqual([0, 5_000, 305_000])
      expect(delivered.attempts[0]!.excerpt).toBe("nope")
      // each attempt is signed afresh: same id, new timestamp
      expect(new Set(server.hits.map((h) => h.headers["webhook-id"]))).toEqual(new Set(["msg_egress_1"]))
      expect(new Set(server.hits.map((h) => h.headers["webhook-timestamp"])).size).toBe(3)
    }))

  it.scoped("honours Retry-After on a 429 (longer than the schedule's delay)", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer((n) => n === 1 ? { status: 429, headers: { "retry-after": "120" } } : { status: 202 })
      const sender = yield* Sender.make({ ...allowLoopback, schedule: ["0 millis", "5 seconds"] })
      const fiber = yield* Effect.fork(sender.send({ id: "ep", url: server.url, secrets: [secret] }, message))
      yield* Effect.promise(() => server.waitFor(1))
      yield* realPause()
      yield* TestClock.adjust("119 seconds")
      yield* realPause()
      expect(server.hits).toHaveLength(1)
      yield* TestClock.adjust("1 second")
      const delivered = yield* Fiber.join(fiber)
      expect(delivered.attempts[0]).toMatchObject({ outcome: "failed", status: 429, retryAfterMillis: 120_000 })
      expect(delivered.attempts[1]!.at - delivered.attempts[0]!.at).toBe(120_000)
    }))

  it.scoped("exhaustion fails with DeliveryExhausted carrying the bounded history (dead-letter path)", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer(() => ({ status: 503, body: "x".repeat(5000) }))
      const sender = yield* Sender.make({ ...allowLoopback, schedule: ["0 millis", "0 millis", "0 millis"], excerptBytes: 100 })
      const error = yield* Effect.flip(sender.send({ id: "ep", url: server.url, secrets: [secret] }, message))
      expect(error._tag).toBe("DeliveryExhausted")
      if (error._tag !== "DeliveryExhausted") return
      expect(error.attempts).toHaveLength(3)
      expect(error.attempts.every((a) => a.status === 503 && a.excerpt.length === 100)).toBe(true)
      expect(yield* Failure.classify(error)).toEqual({ classification: "permanent", category: "dependency" })
      expect(server.hits).toHaveLength(3)
    }))

  it.scoped("never follows a redirect: a 3xx is a failure", () =>
    Effect.gen(function*() {
      const target = yield* endpointServer(() => ({ status: 200 }))
      const server = yield* endpointServer(() => ({ status: 302, headers: { location: `${target.url}/elsewhere` } }))
      const sender = yield* Sender.make({ ...allowLoopback, schedule: ["0 millis"] })
      const error = yield* Effect.flip(sender.send({ id: "ep", url: server.url, secrets: [secret] }, message))
      expect(error._tag).toBe("DeliveryExhausted")
      expect((yield* sender.history(message.id))[0]).toMatchObject({ outcome: "failed", status: 302 })
      expect(target.hits).toHaveLength(0)
    }))

  it.scoped("410 Gone disables the endpoint until it is enabled again", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer((n) => n === 1 ? { status: 410 } : { status: 200 })
      const sender = yield* Sender.make(allowLoopback)
      const endpoint = { id: "ep-gone", url: server.url, secrets: [secret] }
      const gone = yield* Effect.flip(sender.send(endpoint, message))
      expect(gone._tag).toBe("EndpointDisabled")
      expect(yield* sender.isDisabled("ep-gone")).toBe(true)
      const again = yield* Effect.flip(sender.send(endpoint, { ...message, id: "msg_2" }))
      expect(again._tag).toBe("EndpointDisabled")
      expect(server.hits).toHaveLength(1)
      yield* sender.enable("ep-gone")
      expect((yield* sender.send(endpoint, { ...message, id: "msg_3" })).attempts).toHaveLength(1)
    }))

  it.scoped("times out an attempt after 15 s by default (TestClock)", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer(() => "hang")
      const sender = yield* Sender.make({ ...allowLoopback, schedule: ["0 millis"] })
      const fiber = yield* Effect.fork(Effect.flip(sender.send({ id: "ep", url: server.url, secrets: [secret] }, message)))
      yield* Effect.promise(() => server.waitFor(1))
      yield* TestClock.adjust("15 seconds")
      const error = yield* Fiber.join(fiber)
      expect(error._tag).toBe("DeliveryExhausted")
      expect((yield* sender.history(message.id))[0]).toMatchObject({ outcome: "timeout", latencyMillis: 15_000 })
    }))

  it.scoped("the per-endpoint breaker stops requests after consecutive failures", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer(() => ({ status: 500 }))
      const breaker = Breaker.make({ failureThreshold: 2, cooldown: "1 minute" })
      const sender = yield* Sender.make({ ...allowLoopback, breaker, schedule: ["0 millis", "0 millis", "0 millis", "0 millis"] })
      const error = yield* Effect.flip(sender.send({ id: "ep-b", url: server.url, secrets: [secret] }, message))
      expect(error._tag).toBe("DeliveryExhausted")
      expect((yield* sender.history(message.id)).map((a) => a.outcome)).toEqual(["failed", "failed", "breaker-open", "breaker-open"])
      expect(server.hits).toHaveLength(2)
      expect(yield* breaker.state("ep-b")).toBe("open")
      yield* TestClock.adjust("1 minute")
      expect(yield* breaker.state("ep-b")).toBe("half-open")
      expect(yield* breaker.allow("ep-b")).toBe(true)
      expect(yield* breaker.allow("ep-b")).toBe(false)
      yield* breaker.report("ep-b", true)
      expect(yield* breaker.state("ep-b")).toBe("closed")
    }))

  it.scoped("the SSRF guard refuses internal destinations unless allow-listed, before any request", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer(() => ({ status: 200 }))
      const sender = yield* Sender.make({ schedule: ["0 millis"] })
      const port = new URL(server.url).port
      for (const url of [server.url, `http://localhost:${port}`, "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "http://[::1]:1/", "http://[::ffff:127.0.0.1]:1/", "file:///etc/passwd", "not a url"]) {
        const error = yield* Effect.flip(sender.send({ id: "ep", url, secrets: [secret] }, message))
        expect(error._tag, url).toBe("DestinationRefused")
      }
      expect(server.hits).toHaveLength(0)
      expect(Ssrf.isBlockedAddress("192.168.1.1")).toBe(true)
      expect(Ssrf.isBlockedAddress("fd00:ec2::254")).toBe(true)
      expect(Ssrf.isBlockedAddress("fe80::1")).toBe(true)
      expect(Ssrf.isBlockedAddress("100.64.0.1")).toBe(true)
      expect(Ssrf.isBlockedAddress("::ffff:a9fe:a9fe")).toBe(true)
      expect(Ssrf.isBlockedAddress("::ffff:8.8.8.8")).toBe(false)
      expect(Ssrf.isBlockedAddress("93.184.216.34")).toBe(false)
      expect(Ssrf.isBlockedAddress("2606:4700::1111")).toBe(false)
      // allow-listing by CIDR works too
      const allowed = yield* Sender.make({ allow: ["127.0.0.0/8"], schedule: ["0 millis"] })
      expect((yield* allowed.send({ id: "ep", url: server.url, secrets: [secret] }, message)).attempts[0]!.outcome).toBe("delivered")
    }))

  it("parses Retry-After as seconds or an HTTP date", () => {
    expect(Sender.parseRetryAfter("30", 0)).toBe(30_000)
    expect(Sender.parseRetryAfter(new Date(90_000).toUTCString(), 30_000)).toBe(60_000)
    expect(Sender.parseRetryAfter("soon", 0)).toBeUndefined()
    expect(Sender.parseRetryAfter(undefined, 0)).toBeUndefined()
  })

  it.each([
    ["30", 10_000, 30_000],
    ["Thu, 01 Jan 1970 00:01:30 GMT", 30_000, 60_000],
    ["Thursday, 01-Jan-70 00:01:30 GMT", 30_000, 60_000],
    ["Thu Jan  1 00:01:30 1970", 30_000, 60_000],
    ["Thu, 01 Jan 1970 00:00:10 GMT", 30_000, 0],
    ["-5", 0, undefined],
    ["3.5", 0, undefined],
    ["soon 1", 0, undefined],
    ["Thu, 01 Jan 1970", 0, undefined],
    ["", 0, undefined]
  ] as const)("parses Retry-After %j strictly (RFC 9110 §10.2.3; garbage is no hint)", (value, now, expected) => {
    expect(Sender.parseRetryAfter(value, now)).toBe(expected)
  })
})
