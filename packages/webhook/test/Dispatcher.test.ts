import { Observe, Supervise } from "@bulwark/core"
import * as RateLimiter from "@bulwark/resilience/RateLimiter"
import * as RateLimiterStore from "@bulwark/resilience/RateLimiterStore"
import * as MemoryTransport from "@bulwark/transport/Transport/Memory"
import { describe, expect, it } from "@effect/vitest"
import { type Duration, Effect, Fiber, Logger, Option, Schedule, Stream } from "effect"
import { createServer, type IncomingHttpHeaders } from "node:http"
import { Webhook } from "standardwebhooks"
import * as Breaker from "../src/Breaker.js"
import * as Dispatcher from "../src/Dispatcher.js"
import { DispatchStore, DispatchStoreError } from "../src/DispatchStore.js"
import * as MemoryDispatchStore from "../src/DispatchStore/Memory.js"
import * as Sender from "../src/Sender.js"
import * as Signing from "../src/Signing.js"

type Reply = { status: number; headers?: Record<string, string> } | "hang"
interface Hit {
  readonly id: string
  readonly headers: IncomingHttpHeaders
  readonly body: string
}

/** A local endpoint answering `reply(n, hit)` (n counts this endpoint's requests from 1), recording every hit. */
const endpointServer = (reply: (n: number, hit: Hit) => Reply) =>
  Effect.acquireRelease(
    Effect.async<{ url: string; hits: Array<Hit>; successes: Array<string>; close: () => void }>((resume) => {
      const hits: Array<Hit> = []
      const successes: Array<string> = []
      const server = createServer((req, res) => {
        const chunks: Array<Buffer> = []
        req.on("data", (c: Buffer) => chunks.push(c))
        req.on("end", () => {
          const hit = { id: String(req.headers["webhook-id"]), headers: req.headers, body: Buffer.concat(chunks).toString() }
          hits.push(hit)
          const r = reply(hits.length, hit)
          if (r === "hang") return
          if (r.status >= 200 && r.status < 300) successes.push(hit.id)
          res.writeHead(r.status, r.headers ?? {})
          res.end("ok")
        })
      })
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as { port: number }
        resume(Effect.succeed({
          url: `http://127.0.0.1:${port}/hook`,
          hits,
          successes,
          close: () => {
            server.closeAllConnections()
            server.close()
          }
        }))
      })
    }),
    (s) => Effect.sync(s.close)
  )

const body = (text: string) => new TextEncoder().encode(text)
const fast: Dispatcher.Options = { schedule: ["0 millis", "30 millis", "30 millis"], allow: ["127.0.0.1"], pollInterval: "20 millis", attemptTimeout: "2 seconds" }
/** Polls `effect` every 10 ms until `until` holds (20 s at most). */
const poll = <A, E, R>(effect: Effect.Effect<A, E, R>, until: (a: A) => boolean) =>
  effect.pipe(
    Effect.filterOrFail(until, () => "not yet"),
    Effect.retry({ while: (e) => e === "not yet", schedule: Schedule.spaced("10 millis") }),
    Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => "timed out polling" })
  )
/** The message's deliveries, once none is pending. */
const untilSettled = (dispatcher: Dispatcher.Dispatcher["Type"], messageId: string, endpoints = 1) =>
  poll(dispatcher.deliveries({ messageId }), (ds) => ds.length === endpoints && ds.every((d) => d.state !== "pending"))

/**
 * A dispatcher (attempts of at most 1 s) behind a limiter of one permit per `per`: message "first" takes the
 * permit and is delivered, then "second" is sent, and must wait for the next permit.
 */
const secondAfterPermit = (options: { readonly per: Duration.DurationInput; readonly maxWait: Duration.DurationInput; readonly lease: Duration.DurationInput }) =>
  Effect.gen(function*() {
    const limiter = yield* RateLimiter.make("partner-api", {
      limit: { kind: "tokenBucket", permits: 1, per: options.per },
      maxWait: options.maxWait
    }).pipe(Effect.provide(RateLimiterStore.layerMemory))
    const server = yield* endpointServer(() => ({ status: 204 }))
    const dispatcher = yield* Dispatcher.make({ ...fast, attemptTimeout: "1 second", lease: options.lease, rateLimit: { limiter } }).pipe(
      Effect.provide(MemoryDispatchStore.layer())
    )
    yield* Effect.forkScoped(dispatcher.run)
    yield* dispatcher.registerEndpoint({ id: "partner", url: server.url, secrets: [Signing.generateSecret()] })
    yield* dispatcher.send({ id: "first", body: body("{}") }, ["partner"])
    yield* untilSettled(dispatcher, "first")
    yield* dispatcher.send({ id: "second", body: body("{}") }, ["partner"])
    return { dispatcher, server }
  })

describe("Dispatcher", () => {
  it.scopedLive("a permit that would come after the claim's lease runs out is not waited for: the delivery is rescheduled for the permit, nothing recorded", () =>
    Effect.gen(function*() {
      // One permit an hour, and a limiter willing to wait longer; a lease of 3 s leaves a claim 1.5 s to send.
      const sentAt = Date.now()
      const { dispatcher, server } = yield* secondAfterPermit({ per: "1 hour", maxWait: "2 hours", lease: "3 seconds" })
      // Waiting for the permit would outlast the claim; the limiter refuses within the claim's time instead, and
      // the delivery is due again when the limiter says the next permit comes (about an hour on).
      const [delivery] = yield* poll(dispatcher.deliveries({ messageId: "second" }), (ds) => (ds[0]?.dueAt ?? 0) > sentAt + 3_000_000)
        .pipe(Effect.timeout("5 seconds"))
      expect(delivery).toMatchObject({ state: "pending", attempts: 0 })
      expect(yield* dispatcher.attempts("second")).toEqual([])
      expect(server.hits.map((h) => h.id)).toEqual(["first"])
    }))

  it.scopedLive("a permit that would leave the claim less than a whole attempt's lease is not waited for: the request could outlast the claim", () =>
    Effect.gen(function*() {
      // A lease of 8 s and attempts of at most 1 s: a request must go out with 3 s of lease left (the attempt and
      // the margin for recording it), so within 5 s of the claim. The next permit comes about 5.5 s after the first.
      const sentAt = Date.now()
      const { dispatcher, server } = yield* secondAfterPermit({ per: "5500 millis", maxWait: "1 hour", lease: "8 seconds" })
      const [delivery] = yield* poll(dispatcher.deliveries({ messageId: "second" }), (ds) => (ds[0]?.dueAt ?? 0) > sentAt + 4_000)
        .pipe(Effect.timeout("2 seconds"))
      expect(delivery).toMatchObject({ state: "pending", attempts: 0 })
      expect(yield* dispatcher.attempts("second")).toEqual([])
      expect(server.hits.map((h) => h.id)).toEqual(["first"])
    }))

  it.scopedLive("attempts refused a permit by the rate limit neither use up the schedule nor leave records: each delivery of a burst gets all its requests before it is exhausted", () =>
    Effect.gen(function*() {
      // Two permits per 300 ms, refused at once; three deliveries at a time, each with two scheduled attempts.
      const shared = yield* RateLimiter.make("partner-api", {
        limit: { kind: "tokenBucket", permits: 2, per: "300 millis" },
        maxWait: "0 millis"
      }).pipe(Effect.provide(RateLimiterStore.layerMemory))
      // The refusals, seen at the limiter: the dispatcher records none of them.
      const refusals: Array<string> = []
      const limiter: RateLimiter.RateLimiter = {
        ...shared,
        acquire: (key, options) => Effect.tapError(shared.acquire(key, options), (e) => Effect.sync(() => refusals.push(e._tag)))
      }
      const server = yield* endpointServer(() => ({ status: 503 }))
      const dispatcher = yield* Dispatcher.make({
        ...fast,
        schedule: ["0 millis", "30 millis"],
        concurrency: 3,
        rateLimit: { limiter },
        // Out of the way: an open breaker's attempts count toward the schedule, which is not what is checked here.
        breaker: Breaker.make({ failureThreshold: 1_000 })
      }).pipe(Effect.provide(MemoryDispatchStore.layer()))
      yield* Effect.forkScoped(dispatcher.run)
      yield* dispatcher.registerEndpoint({ id: "partner", url: server.url, secrets: [Signing.generateSecret()] })
      const ids = ["b-1", "b-2", "b-3", "b-4", "b-5", "b-6"]
      for (const id of ids) yield* dispatcher.send({ id, body: body("{}") }, ["partner"])
      for (const id of ids) {
        const [delivery] = yield* untilSettled(dispatcher, id)
        expect(delivery).toMatchObject({ state: "failed", failReason: "exhausted" })
        // Two requests each, whatever number of refused permits came between them, and only they are recorded.
        expect((yield* dispatcher.attempts(id)).map((a) => a.outcome)).toEqual(["failed", "failed"])
        expect(delivery!.attempts).toBe(2)
        expect(server.hits.filter((h) => h.id === id)).toHaveLength(2)
      }
      // The limit did refuse some: the burst was larger than its permits.
      expect(refusals.length).toBeGreaterThan(0)
    }))

  it.scopedLive("delivers a Standard Webhooks message the official library verifies; attempts are recorded", () =>
    Effect.gen(function*() {
      const secret = Signing.generateSecret()
      const server = yield* endpointServer((n) => n === 1 ? { status: 503, headers: { "retry-after": "0" } } : { status: 204 })
      const dispatcher = yield* Dispatcher.make(fast).pipe(Effect.provide(MemoryDispatchStore.layer()))
      yield* Effect.forkScoped(dispatcher.run)
      yield* dispatcher.registerEndpoint({ id: "partner", url: server.url, secrets: [secret] })
      expect(yield* dispatcher.send({ id: "msg_1", body: body(`{"type":"order.paid"}`) }, ["partner"])).toBe(1)
      expect(yield* dispatcher.send({ id: "msg_1", body: body(`{"type":"order.paid"}`) }, ["partner"])).toBe(0)
      const [delivery] = yield* untilSettled(dispatcher, "msg_1")
      expect(delivery).toMatchObject({ state: "delivered", attempts: 2 })
      expect(server.hits.map((h) => h.id)).toEqual(["msg_1", "msg_1"])
      const last = server.hits[1]!
      expect(new Webhook(secret).verify(last.body, last.headers as Record<string, string>)).toEqual({ type: "order.paid" })
      expect((yield* dispatcher.attempts("msg_1")).map((a) => [a.attempt, a.outcome, a.status])).toEqual([[1, "failed", 503], [2, "delivered", 204]])
    }))

  it.scopedLive("410 disables the endpoint (endpoint.disabled); exhaustion and recovery are announced", () =>
    Effect.gen(function*() {
      const events: Array<Dispatcher.OperationalEvent> = []
      const observed: Array<string> = []
      const gone = yield* endpointServer(() => ({ status: 410 }))
      const down = yield* endpointServer(() => ({ status: 500 }))
      const flaky = yield* endpointServer((n) => n < 3 ? { status: 502 } : { status: 200 })
      const dispatcher = yield* Dispatcher.make({
        ...fast,
        onEvent: (event) => Effect.sync(() => events.push(event))
      }).pipe(Effect.provide(MemoryDispatchStore.layer()))
      yield* Effect.forkScoped(dispatcher.run.pipe(Observe.observe((e) => observed.push(`${e.source}:${e.kind}`))))
      for (const [id, server] of [["gone", gone], ["down", down], ["flaky", flaky]] as const) {
        yield* dispatcher.registerEndpoint({ id, url: server.url, secrets: [Signing.generateSecret()] })
      }
      yield* dispatcher.send({ id: "m1", body: body("{}") }, ["gone", "down", "flaky"])
      const settled = yield* untilSettled(dispatcher, "m1", 3)
      expect(Object.fromEntries(settled.map((d) => [d.endpointId, [d.state, d.failReason, d.attempts]]))).toEqual({
        gone: ["failed", "gone", 1],
        down: ["failed", "exhausted", 3],
        flaky: ["delivered", undefined, 3]
      })
      expect(events.map((e) => `${e.type}:${e.endpointId}`).sort()).toEqual([
        "endpoint.disabled:gone",
        "message.attempt.exhausted:down",
        "message.attempt.recovered:flaky"
      ])
      expect(observed).toContain("dispatcher:endpoint.disabled")
      // A disabled endpoint gets no request: its next delivery fails as disabled, until it is enabled again.
      yield* dispatcher.send({ id: "m2", body: body("{}") }, ["gone"])
      expect((yield* untilSettled(dispatcher, "m2"))[0]).toMatchObject({ state: "failed", failReason: "disabled", attempts: 0 })
      expect(gone.hits.length).toBe(1)
      yield* dispatcher.enable("gone")
      expect(yield* dispatcher.recover("gone", 0)).toBe(2)
      yield* poll(Effect.sync(() => gone.hits.length), (n) => n === 3)
    }))

  it.scopedLive("an endpoint failing for longer than disableAfter is disabled; resend delivers a delivered message again", () =>
    Effect.gen(function*() {
      const events: Array<Dispatcher.OperationalEvent> = []
      const down = yield* endpointServer(() => ({ status: 503 }))
      const up = yield* endpointServer(() => ({ status: 200 }))
      const dispatcher = yield* Dispatcher.make({
        ...fast,
        schedule: Array.from({ length: 20 }, () => "20 millis"),
        disableAfter: "100 millis",
        breaker: { allow: () => Effect.succeed(true), report: () => Effect.void, state: () => Effect.succeed("closed") },
        onEvent: (event) => Effect.sync(() => events.push(event))
      }).pipe(Effect.provide(MemoryDispatchStore.layer()))
      yield* Effect.forkScoped(dispatcher.run)
      yield* dispatcher.registerEndpoint({ id: "down", url: down.url, secrets: [Signing.generateSecret()] })
      yield* dispatcher.registerEndpoint({ id: "up", url: up.url, secrets: [Signing.generateSecret()] })
      yield* dispatcher.send({ id: "m", body: body("{}") }, ["down", "up"])
      const settled = yield* untilSettled(dispatcher, "m", 2)
      expect(settled.find((d) => d.endpointId === "down")).toMatchObject({ state: "failed", failReason: "disabled" })
      expect(events.filter((e) => e.type === "endpoint.disabled").map((e) => e.endpointId)).toEqual(["down"])
      expect(yield* dispatcher.resend("m", "up")).toBe(1)
      yield* poll(Effect.sync(() => up.successes.length), (n) => n === 2)
    }))

  it.scopedLive("a worker whose store is unreachable backs off, is degraded meanwhile, and delivers once it is back", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer(() => ({ status: 200 }))
      const store = yield* MemoryDispatchStore.make()
      let down = true
      const flaky: typeof store = {
        ...store,
        claim: (request) =>
          down ? Effect.fail(new DispatchStoreError({ operation: "claim", cause: new Error("connection refused") })) : store.claim(request)
      }
      const dispatcher = yield* Dispatcher.make({ ...fast, workerId: "flaky" }).pipe(Effect.provideService(DispatchStore, flaky))
      yield* dispatcher.registerEndpoint({ id: "e", url: server.url, secrets: [Signing.generateSecret()] })
      yield* dispatcher.send({ id: "m", body: body("{}") }, ["e"])
      yield* Effect.forkScoped(dispatcher.run)
      yield* poll(Effect.map(Supervise.health, (h) => h.get("webhook-dispatcher:flaky")), (h) => h === "degraded")
      down = false
      yield* untilSettled(dispatcher, "m")
      expect(server.successes).toEqual(["m"])
      yield* poll(Effect.map(Supervise.health, (h) => h.get("webhook-dispatcher:flaky")), (h) => h === "up")
    }))

  it.scopedLive("each attempt is a client span whose W3C context goes out with the request", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer(() => ({ status: 200 }))
      const sender = yield* Sender.make({ allow: ["127.0.0.1"] })
      const outer = yield* sender.send({ id: "e", url: server.url, secrets: [Signing.generateSecret()] }, { id: "traced", body: body("{}") }).pipe(
        Effect.zipRight(Effect.currentSpan),
        Effect.withSpan("notify partner")
      )
      const traceparent = String(server.hits[0]?.headers["traceparent"])
      // version-traceid-spanid-flags: the trace is the caller's, the parent is the attempt's own span.
      const [, traceId, spanId] = traceparent.split("-")
      expect(traceId).toBe(outer.traceId)
      expect(spanId).not.toBe(outer.spanId)
    }))

  it.scopedLive("send to an unregistered endpoint fails with UnknownEndpoint and stores nothing", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher.make(fast).pipe(Effect.provide(MemoryDispatchStore.layer()))
      const error = yield* Effect.flip(dispatcher.send({ id: "m", body: body("{}") }, ["nobody"]))
      expect(error).toBeInstanceOf(Dispatcher.UnknownEndpoint)
      expect(yield* dispatcher.deliveries({})).toEqual([])
    }))

  it.scopedLive("workers sharing a store deliver each message once; a worker stopped mid-attempt loses nothing", () =>
    Effect.gen(function*() {
      // Every fourth message fails its first attempt, so retries run across both workers too.
      const failedOnce = new Set<string>()
      const server = yield* endpointServer((_, hit) =>
        Number(hit.id.slice(1)) % 4 === 0 && !failedOnce.has(hit.id) ? (failedOnce.add(hit.id), { status: 503 }) : { status: 200 }
      )
      const store = yield* MemoryDispatchStore.make()
      const make = (workerId: string) =>
        // Generous times: on a loaded machine an attempt may take a while, and a lease lost to slowness is
        // another worker's to take (the test is about sharing, not about timeouts).
        Dispatcher.make({ ...fast, workerId, userAgent: workerId, lease: "8 seconds", attemptTimeout: "4 seconds" }).pipe(
          Effect.provideService(DispatchStore, store)
        )
      const a = yield* make("a")
      const b = yield* make("b")
      yield* a.registerEndpoint({ id: "e", url: server.url, secrets: [Signing.generateSecret()] })
      for (let i = 0; i < 40; i++) yield* a.send({ id: `m${i}`, body: body(`{"i":${i}}`) }, ["e"])
      const doomed = yield* Effect.fork(a.run.pipe(Effect.scoped))
      yield* Effect.forkScoped(b.run)
      yield* poll(Effect.sync(() => server.hits.length), (n) => n >= 5)
      yield* Fiber.interrupt(doomed)
      yield* poll(a.deliveries({ state: "delivered", limit: 100 }), (ds) => ds.length === 40)
      const counts = new Map<string, number>()
      for (const id of server.successes) counts.set(id, (counts.get(id) ?? 0) + 1)
      expect(counts.size).toBe(40)
      // A second success is possible only where an answer was lost: the stopped worker's request answered and
      // not recorded, or an attempt that timed out on the client after the endpoint had taken it (a loaded
      // machine) — same webhook-id, the receiver drops the copy. Never for a message neither happened to.
      const touchedByA = new Set(server.hits.filter((h) => h.headers["user-agent"] === "a").map((h) => h.id))
      expect(touchedByA.size).toBeGreaterThan(0)
      for (const [id, n] of counts) {
        if (touchedByA.has(id) || n === 1) continue
        const outcomes = (yield* a.attempts(id)).map((attempt) => attempt.outcome)
        expect(outcomes).toContain("timeout")
      }
      expect([...counts.values()].every((n) => n <= 2)).toBe(true)
    }))
})

describe("a claim's lease covers its attempt", () => {
  it.scopedLive("a claim that reaches its attempt with too little lease left sends nothing; the delivery is claimed afresh once the lease lapses", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer(() => ({ status: 200 }))
      const real = yield* MemoryDispatchStore.make()
      let slowClaims = 1
      // The first claim answers late (a slow store, a starved event loop): 700 ms of its 1 s lease are gone.
      const store: DispatchStore["Type"] = {
        ...real,
        claim: (request) =>
          Effect.zipLeft(real.claim(request), Effect.suspend(() => slowClaims-- > 0 ? Effect.sleep("700 millis") : Effect.void))
      }
      const warnings: Array<string> = []
      const logger = Logger.replace(Logger.defaultLogger, Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") warnings.push(String(message))
      }))
      const dispatcher = yield* Dispatcher.make({ ...fast, lease: "1 second", attemptTimeout: "2 seconds" }).pipe(
        Effect.provideService(DispatchStore, store)
      )
      yield* dispatcher.registerEndpoint({ id: "e", url: server.url, secrets: [Signing.generateSecret()] })
      yield* dispatcher.send({ id: "late", body: body("{}") }, ["e"])
      expect(yield* dispatcher.runOnce.pipe(Effect.provide(logger))).toBe(0)
      expect(server.hits).toEqual([])
      expect(warnings.join("\n")).toContain("less than an attempt may take; not sending it")
      // Still claimed: nothing is due until the lease lapses, then the delivery goes out once.
      expect(yield* dispatcher.runOnce).toBe(0)
      yield* Effect.sleep("400 millis")
      expect(yield* dispatcher.runOnce).toBe(1)
      expect(server.successes).toEqual(["late"])
    }))

  it.scopedLive("an answered attempt is recorded even when its worker is interrupted meanwhile", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer(() => ({ status: 200 }))
      const real = yield* MemoryDispatchStore.make()
      let settling: (() => void) | undefined
      // Recording the answer takes a while, and the worker is interrupted right then.
      const store: DispatchStore["Type"] = {
        ...real,
        settle: (...args) =>
          Effect.zipRight(
            Effect.async<void>((resume) => {
              settling = () => resume(Effect.void)
            }),
            real.settle(...args)
          )
      }
      const dispatcher = yield* Dispatcher.make(fast).pipe(Effect.provideService(DispatchStore, store))
      yield* dispatcher.registerEndpoint({ id: "e", url: server.url, secrets: [Signing.generateSecret()] })
      yield* dispatcher.send({ id: "answered", body: body("{}") }, ["e"])
      const once = yield* Effect.fork(dispatcher.runOnce)
      yield* poll(Effect.sync(() => settling), (resume) => resume !== undefined)
      const interrupted = yield* Effect.fork(Fiber.interrupt(once))
      yield* Effect.sleep("50 millis")
      settling!()
      yield* Fiber.join(interrupted)
      expect(server.successes).toEqual(["answered"])
      const [delivery] = yield* dispatcher.deliveries({ messageId: "answered" })
      expect(delivery).toMatchObject({ state: "delivered", attempts: 1 })
    }))
})

describe("stopping a worker", () => {
  it.scopedLive("a stopping worker waits for its attempts only up to the drain bound, then interrupts them", () =>
    Effect.gen(function*() {
      const real = yield* MemoryDispatchStore.make()
      let settling = false
      // Settling the claim of a disabled endpoint hangs (a store that stopped answering), interruptibly.
      const store: DispatchStore["Type"] = {
        ...real,
        settle: () => Effect.zipRight(Effect.sync(() => (settling = true)), Effect.never)
      }
      const dispatcher = yield* Dispatcher.make({ ...fast, attemptTimeout: "200 millis" }).pipe(Effect.provideService(DispatchStore, store))
      yield* dispatcher.registerEndpoint({ id: "e", url: "http://127.0.0.1:9/hook", secrets: [Signing.generateSecret()] })
      yield* dispatcher.send({ id: "stuck", body: body("{}") }, ["e"])
      yield* dispatcher.disable("e", "test")
      // Daemons, so that a stop that never ends fails this test instead of hanging it.
      const worker = yield* Effect.forkDaemon(Effect.scoped(dispatcher.run))
      yield* poll(Effect.sync(() => settling), (s) => s)
      // The drain bound is the attempt timeout plus a second: the stop must end soon after, not wait forever.
      const started = Date.now()
      const stop = yield* Effect.forkDaemon(Fiber.interrupt(worker))
      const stopped = yield* poll(Fiber.poll(stop), Option.isSome).pipe(Effect.timeout("6 seconds"), Effect.either)
      const took = Date.now() - started
      expect(stopped._tag).toBe("Right")
      expect(took).toBeGreaterThanOrEqual(1_000)
      expect(took).toBeLessThan(5_000)
    }))
})

describe("redelivery during a retry (the in-process sender's double delivery)", () => {
  // The scenario from the report: a queue consumer delivers a webhook; the endpoint fails once; the retry
  // waits longer than the queue's visibility timeout, so the queue hands the message to a second consumer.
  const scenario = (deliver: (id: string) => Effect.Effect<void, unknown>) =>
    Effect.gen(function*() {
      const transport = yield* MemoryTransport.make({ visibilityTimeout: "150 millis" })
      yield* transport.publish("notify", [{ id: "evt_1", key: "k", payload: body("{}"), headers: {} }])
      const consumer = transport.subscribe("notify").pipe(
        Stream.mapEffect((delivery) =>
          // The handler is slow besides: past the visibility timeout, the queue redelivers the message meanwhile.
          deliver(delivery.message.id).pipe(
            Effect.ignore,
            Effect.zipRight(Effect.sleep("200 millis")),
            Effect.zipRight(Effect.ignore(delivery.ack))
          ), { concurrency: 4 }),
        Stream.runDrain
      )
      const fiber = yield* Effect.fork(consumer)
      yield* Effect.sleep("1500 millis")
      yield* Fiber.interrupt(fiber)
    })

  it.scopedLive("Sender.send in the consumer: its retry sleep outlives the visibility timeout, and the endpoint gets several successes", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer((n) => n === 1 ? { status: 503 } : { status: 200 })
      const endpoint = { id: "partner", url: server.url, secrets: [Signing.generateSecret()] }
      const sender = yield* Sender.make({ schedule: ["0 millis", "400 millis", "400 millis"], allow: ["127.0.0.1"] })
      yield* scenario((id) => sender.send(endpoint, { id, body: body("{}") }))
      expect(server.successes.length).toBeGreaterThanOrEqual(2)
      expect(new Set(server.successes)).toEqual(new Set(["evt_1"]))
    }))

  it.scopedLive("Dispatcher.send in the consumer: the redelivered message is stored once, and the endpoint gets one success", () =>
    Effect.gen(function*() {
      const server = yield* endpointServer((n) => n === 1 ? { status: 503 } : { status: 200 })
      const dispatcher = yield* Dispatcher.make({ ...fast, schedule: ["0 millis", "400 millis", "400 millis"] }).pipe(
        Effect.provide(MemoryDispatchStore.layer())
      )
      yield* Effect.forkScoped(dispatcher.run)
      yield* dispatcher.registerEndpoint({ id: "partner", url: server.url, secrets: [Signing.generateSecret()] })
      // The consumer only stores the delivery; the redelivered copy stores nothing new.
      yield* scenario((id) => dispatcher.send({ id, body: body("{}") }, ["partner"]))
      yield* untilSettled(dispatcher, "evt_1")
      expect(server.successes).toEqual(["evt_1"])
      expect(server.hits.length).toBe(2)
    }))
})
