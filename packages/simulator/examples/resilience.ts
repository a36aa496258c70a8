/**
 * Outbound load control on the real `@bulwark/resilience`: three consumer processes call one rate-limited,
 * idempotency-keyed downstream, each call through retry → hedge → bulkhead → rate limit → timeout (the
 * checked stage order), the limiter's state in the world's one shared rate-limiter store. The policy declares
 * the partner's limit (2 calls in any second, across every process) and the bulkhead's bound (2 calls in
 * flight per process); the `downstream-rate-limit` and `bulkhead-bound` invariants hold the run to them, and
 * `no-duplicate-effects` holds the hedges to one effect per message.
 *
 * Its wrong twins are the configurations users get wrong: a limiter store per process (each process keeps the
 * limit, together they exceed it), a bulkhead made per message (it never bounds anything), and hedging a
 * request whose idempotency key is minted per request (the copy is a second effect).
 */
import { Envelope, Handler } from "@bulwark/core"
import { Idempotent } from "@bulwark/idempotency"
import { Bulkhead, Hedge, RateLimiter, RateLimiterStore } from "@bulwark/resilience"
import { Backoff, Retry } from "@bulwark/retry"
import { consume } from "@bulwark/transport/Transport"
import { Ingress as WebhookIngress, Verifier } from "@bulwark/webhook"
import { Duration, Effect, pipe, Schema } from "effect"
import * as Invariant from "../src/Invariant.js"
import type * as Scenario from "../src/Scenario.js"
import * as Simulation from "../src/Simulation.js"
import type { DownstreamError, Ingress, World } from "../src/World.js"
import { type Entry, only } from "./catalogue.js"

/** The provider's webhook payload. */
const Call = Schema.Struct({ ref: Schema.String, key: Schema.String, amount: Schema.Number, poison: Schema.Boolean })

/** The choices; the defaults are the correct ones. */
export interface Variant {
  /** The limiter's state: the world's shared store, or a memory store each process makes for itself (bug). */
  readonly limiter: "shared" | "per-process"
  /** One bulkhead per process, or a new one per message (bug: it never sees a second call). */
  readonly bulkhead: "per-process" | "per-message"
  /**
   * The idempotency key a (hedged) request carries: the envelope id, the same for every copy, or one minted
   * per request (bug: the downstream cannot tell a hedge from a new call, and applies both).
   */
  readonly requestKey: "envelope-id" | "per-request"
}

const correct: Variant = { limiter: "shared", bulkhead: "per-process", requestKey: "envelope-id" }

/** The partner's declared limit: 2 calls in any 1 s window, across every process. */
export const rate = { limit: 2, windowMillis: 1_000 }
/** Downstream calls one process may have in flight (room for an attempt and its hedge). */
export const maxConcurrent = 2

const topic = "calls"

/** Builds the pipeline for a variant inside the simulated world. */
export const pipeline = (overrides: Partial<Variant> = {}) => (world: World) => {
  const v: Variant = { ...correct, ...overrides }
  const receive = WebhookIngress.process({
    verifier: Verifier.standard([world.secret], { tolerance: Duration.millis(world.history.policy.webhookTolerance) }),
    schema: Call,
    topic,
    type: "call.requested",
    subject: (data) => data.key
  })
  const ingress: Ingress = (request) => Effect.map(Effect.exit(receive(request)), (exit) => WebhookIngress.answer(exit).status)

  let requests = 0
  // Suspended: the key is read as each request is sent, as a client minting a request id per HTTP call does.
  const call: Handler.Handler<typeof Call.Type, DownstreamError> = (envelope: Envelope.Envelope<typeof Call.Type>) =>
    Effect.suspend(() =>
      world.callDownstream({
        ref: envelope.data.ref,
        key: envelope.data.key,
        order: world.orderOf(topic, envelope.id),
        idempotencyKey: v.requestKey === "envelope-id" ? envelope.id : `${envelope.id}/${requests++}`
      })
    )
  // A copy after 500 ms without an answer (the downstream takes 300 ms), or at once when an attempt fails.
  const hedge = Hedge.middleware({ name: "partner", delay: "500 millis", maxHedges: 1 })
  const retry = Retry.middleware(Retry.policy({
    schedule: Backoff.exponential({ base: "100 millis", cap: "1 second" }),
    maxAttempts: 3
  }))
  const bulkheadOptions: Bulkhead.Options = { maxConcurrent, maxQueue: 100 }

  const consumer = Effect.gen(function*() {
    // The bug: a memory store made inside the process, so each process has a limit of its own.
    const limiter = yield* (v.limiter === "shared"
      ? RateLimiter.make("partner", { limit: { kind: "slidingWindow", ...toLimit() }, maxWait: "1 minute" })
      : Effect.provideServiceEffect(
        RateLimiter.make("partner", { limit: { kind: "slidingWindow", ...toLimit() }, maxWait: "1 minute" }),
        RateLimiterStore.RateLimiterStore,
        RateLimiterStore.makeMemory
      ))
    const bulkhead = yield* Bulkhead.make("partner", bulkheadOptions)
    const limited = pipe(call, Handler.timeout("2 seconds"), RateLimiter.middleware(limiter))
    // The bug: a bulkhead made afresh for every attempt bounds nothing.
    const bounded = v.bulkhead === "per-process"
      ? Bulkhead.middleware(bulkhead)(limited)
      : Handler.withStage("bulkhead", limited, (envelope: Envelope.Envelope<typeof Call.Type>) =>
        Effect.flatMap(Bulkhead.make("partner", bulkheadOptions), (fresh) => fresh.execute(limited(envelope))))
    const handler = pipe(
      bounded,
      hedge,
      retry,
      Idempotent.idempotent<typeof Call.Type>({ namespace: "calls:", lease: "30 seconds", retention: "1 hour", onInProgress: "nack" })
    )
    return yield* consume(topic, handler, { schema: Call, group: "consumer", concurrency: 4, maxAttempts: 8 })
  })

  return Effect.gen(function*() {
    for (let i = 0; i < 3; i++) yield* world.spawn(`consumer-${i + 1}`, Effect.provide(Effect.orDie(consumer), world.context))
    return ingress
  })
}

const toLimit = () => ({ limit: rate.limit, window: Duration.millis(rate.windowMillis) })

/** What these simulations hold the pipeline to. */
export const invariants: ReadonlyArray<Invariant.Invariant> = [
  Invariant.noLoss,
  Invariant.noUnexpected,
  Invariant.noDuplicateEffects,
  Invariant.processRuns,
  Invariant.liveness,
  Invariant.downstreamRateLimit,
  Invariant.bulkheadBound
]

const policy = { maxDeliveries: 8, downstreamRate: rate, maxConcurrentCalls: maxConcurrent }

const simulation = (name: string, variant: Partial<Variant>, workload: Scenario.Config) =>
  Simulation.make({
    name,
    pipeline: pipeline(variant),
    workload,
    policy,
    // Slow enough that calls overlap, so concurrency is there to bound.
    world: { downstreamLatency: 300 },
    invariants
  })

const entry = (id: string, bug: string, caughtBy: ReadonlyArray<string>, workload: Scenario.Config, variant: Partial<Variant>): Entry => ({
  id,
  bug,
  caughtBy,
  wrong: simulation(`${id} (wrong)`, variant, workload),
  twin: simulation(`${id} (twin)`, {}, workload)
})

/** The wrong load-control configurations, each beside its correct twin. */
export const catalogue: ReadonlyArray<Entry> = [
  entry(
    "rate-limiter-per-process",
    "each consumer process makes its own memory limiter store, so each keeps the partner's limit and together they exceed it",
    ["downstream-rate-limit"],
    { maxMessages: 8, maxFaults: 2, weights: only({ crash: 1, outage: 1 }) },
    { limiter: "per-process" }
  ),
  entry(
    "bulkhead-per-message",
    "makes a new bulkhead for every attempt, so it never holds back a second concurrent call",
    ["bulkhead-bound"],
    { maxMessages: 8, maxFaults: 2, weights: only({ crash: 1, slow: 1 }) },
    { bulkhead: "per-message" }
  ),
  entry(
    "hedge-without-stable-key",
    "hedges a call whose idempotency key is minted per request, so the downstream applies the first copy and its hedge",
    ["no-duplicate-effects"],
    // Slow answers only: no crash or timeout that would redeliver or retry, so the second effect is the hedge's.
    { maxMessages: 5, maxFaults: 2, weights: only({ slow: 1 }) },
    { requestKey: "per-request" }
  )
]
