/**
 * The dispatcher soak, shared by the suite (small) and the benchmark (10,000 messages): messages spread over
 * local endpoints — most healthy, some failing a share of their requests (503, some with `Retry-After`), some
 * answering 410 after a while — delivered by two dispatcher workers over one SQL store, with both workers
 * restarted mid-run. It reports what every endpoint received, so the caller can check that each message
 * reached its healthy endpoint exactly once.
 */
import type { Database } from "@bulwark/sql"
import type * as SqlClient from "@effect/sql/SqlClient"
import { Duration, Effect, Exit, Layer, Scope } from "effect"
import { createServer } from "node:http"
import * as Breaker from "../../src/Breaker.js"
import * as Dispatcher from "../../src/Dispatcher.js"
import { DispatchStore } from "../../src/DispatchStore.js"
import * as SqlDispatchStore from "../../src/DispatchStore/Sql.js"
import * as Signing from "../../src/Signing.js"

/** Settings of one soak. */
export interface SoakOptions {
  readonly messages: number
  readonly endpoints: number
  /** Endpoints (the first ones) that answer 410 once they have had this many requests. */
  readonly goneEndpoints: number
  readonly goneAfter: number
  /** Endpoints (after the gone ones) that fail this share of their requests. */
  readonly flakyEndpoints: number
  readonly failureRate: number
  /** The workers are restarted when this share of the messages has been delivered. */
  readonly restartAt: number
  readonly table: string
}

/** What the soak saw. */
export interface SoakReport {
  readonly millis: number
  readonly requests: number
  /** Per webhook-id, how many 2xx answers it got. */
  readonly successes: ReadonlyMap<string, number>
  /** The endpoint each message went to. */
  readonly endpointOf: ReadonlyMap<string, number>
  /** Endpoints that answered 410 at least once. */
  readonly gone: ReadonlySet<number>
  /** Deliveries by state after the run. */
  readonly states: Readonly<Record<string, number>>
  /** Attempts recorded for a sample of messages, read after the restart. */
  readonly sampleAttempts: number
  /**
   * Messages answered 2xx more than once that had an attempt whose answer the dispatcher never saw (a timeout,
   * a network error): at least once allows their second success. Any other repeat is a duplicate.
   */
  readonly unseenAnswer: ReadonlySet<string>
  readonly restarted: boolean
}

/** A deterministic pseudo-random sequence (the failures differ per request but not per run). */
const lcg = (seed: number) => () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32

/** Runs a soak over the database in context. */
export const soak = (options: SoakOptions): Effect.Effect<SoakReport, unknown, SqlClient.SqlClient | Database.Database> =>
  Effect.gen(function*() {
    const random = lcg(42)
    const successes = new Map<string, number>()
    const endpointRequests = new Map<number, number>()
    const gone = new Set<number>()
    let requests = 0
    const server = createServer((req, res) => {
      req.resume()
      req.on("end", () => {
        requests++
        const endpoint = Number((req.url ?? "/0").slice(1))
        const n = (endpointRequests.get(endpoint) ?? 0) + 1
        endpointRequests.set(endpoint, n)
        const id = String(req.headers["webhook-id"])
        if (endpoint < options.goneEndpoints && n > options.goneAfter) {
          gone.add(endpoint)
          res.writeHead(410).end()
          return
        }
        const flaky = endpoint >= options.goneEndpoints && endpoint < options.goneEndpoints + options.flakyEndpoints
        if (flaky && random() < options.failureRate) {
          res.writeHead(503, random() < 0.5 ? { "retry-after": "0" } : {}).end()
          return
        }
        successes.set(id, (successes.get(id) ?? 0) + 1)
        res.writeHead(204).end()
      })
    })
    yield* Effect.acquireRelease(
      Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
      () => Effect.sync(() => {
        server.closeAllConnections()
        server.close()
      })
    )
    const port = (server.address() as { port: number }).port
    const store = yield* SqlDispatchStore.make({ table: options.table })
    const settings: Dispatcher.Options = {
      allow: ["127.0.0.1"],
      schedule: Array.from({ length: 14 }, (_, i) => Duration.millis(i === 0 ? 0 : Math.min(400, 25 * 2 ** i))),
      attemptTimeout: "5 seconds",
      pollInterval: "50 millis",
      concurrency: 25,
      breaker: Breaker.make({ failureThreshold: 20, cooldown: "50 millis" })
    }
    const workers = Layer.mergeAll(
      Layer.effectDiscard(Effect.flatMap(Dispatcher.make({ ...settings, workerId: "w1" }), (d) => Effect.forkScoped(d.run))),
      Layer.effectDiscard(Effect.flatMap(Dispatcher.make({ ...settings, workerId: "w2" }), (d) => Effect.forkScoped(d.run)))
    ).pipe(Layer.provide(Layer.succeed(DispatchStore, store)))
    const producer = yield* Dispatcher.make({ ...settings, workerId: "producer" }).pipe(Effect.provideService(DispatchStore, store))

    const started = Date.now()
    const endpointOf = new Map<string, number>()
    for (let e = 0; e < options.endpoints; e++) {
      yield* producer.registerEndpoint({ id: `e${e}`, url: `http://127.0.0.1:${port}/${e}`, secrets: [Signing.generateSecret()] })
    }
    const ids = Array.from({ length: options.messages }, (_, i) => `msg_${i}`)
    yield* Effect.forEach(ids, (id, i) => {
      endpointOf.set(id, i % options.endpoints)
      return producer.send({ id, body: new TextEncoder().encode(`{"i":${i}}`) }, [`e${i % options.endpoints}`])
    }, { concurrency: 8, discard: true })

    const run = (until: () => boolean) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        yield* Layer.buildWithScope(workers, scope)
        yield* Effect.sleep("20 millis").pipe(Effect.repeat({ until }), Effect.timeout("10 minutes"))
        // A graceful restart: the workers stop claiming and finish their attempts in flight.
        yield* Scope.close(scope, Exit.void)
      })
    const pendingCount = Effect.map(store.deliveries({ state: "pending", limit: 1 }), (ds) => ds.length)
    let pending = 1
    yield* run(() => successes.size >= options.messages * options.restartAt)
    yield* run(() => pending === 0).pipe(
      Effect.race(Effect.forever(Effect.zipRight(Effect.sleep("100 millis"), Effect.map(pendingCount, (n) => { pending = n }))))
    )
    const millis = Date.now() - started
    const states: Record<string, number> = {}
    for (const state of ["pending", "delivered", "failed"] as const) {
      states[state] = (yield* store.deliveries({ state, limit: options.messages + 1 })).length
    }
    let sampleAttempts = 0
    for (const id of ids.slice(0, 50)) sampleAttempts += (yield* store.attempts(id)).length
    const unseenAnswer = new Set<string>()
    for (const [id, n] of successes) {
      if (n < 2) continue
      const attempts = yield* store.attempts(id)
      if (attempts.some((a) => a.outcome === "timeout" || a.outcome === "network-error")) unseenAnswer.add(id)
    }
    return { millis, requests, successes, endpointOf, gone, states, sampleAttempts, unseenAnswer, restarted: true }
  }).pipe(Effect.scoped)
