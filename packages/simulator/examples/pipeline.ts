/**
 * A realistic pipeline built from Bulwark's real packages, and the mistakes users make with them as
 * one-field deviations of {@link Variant} (`pipeline({})` is the correct one):
 *
 * webhook → `payments` → ledger → outbox → relay → `postings` → downstream, with dead letters replayed.
 *
 * - the Standard Webhooks verifier and ingress (`@bulwark/webhook`) publish each accepted webhook;
 * - the ledger consumer posts it once — the posting, its dedupe record and the outbox row in one
 *   transaction (`@bulwark/outbox`'s memory store, the world's database);
 * - the relay (`@bulwark/outbox` `Relay`) publishes the rows in commit order;
 * - the postings consumer calls the downstream through timeout → breaker (`@bulwark/circuit-breaker`) →
 *   retry (`@bulwark/retry`) → idempotency (`@bulwark/idempotency`) in a `Pipeline` (`@bulwark/core`);
 * - dead letters are drained into the store and those of an outage replayed (`@bulwark/dead-letter`);
 * - each applied posting is announced to a partner by a signed webhook through the durable `Dispatcher`
 *   (`@bulwark/webhook`): the consumer stores the delivery, two dispatcher processes deliver it.
 */
import { Breaker } from "@bulwark/circuit-breaker"
import { Delivery, Envelope, Failure, Handler, Pipeline } from "@bulwark/core"
import { DeadLetter, Replay } from "@bulwark/dead-letter"
import { Idempotent } from "@bulwark/idempotency"
import { Outbox, Relay } from "@bulwark/outbox"
import * as MemoryOutboxStore from "@bulwark/outbox/OutboxStore/Memory"
import { RateLimiter, RateLimiterStore } from "@bulwark/resilience"
import { Backoff, Retry } from "@bulwark/retry"
import { Publisher, Subscriber, consume } from "@bulwark/transport/Transport"
import { Dispatcher, type DispatchStore, Ingress as WebhookIngress, Sender, Signing, Verifier } from "@bulwark/webhook"
import { Duration, Effect, pipe, Schema, Stream } from "effect"
import type { DownstreamError, Ingress, World } from "../src/World.js"

/** The provider's webhook payload. */
export const Payment = Schema.Struct({
  ref: Schema.String,
  key: Schema.String,
  amount: Schema.Number,
  poison: Schema.Boolean
})

/** What the ledger posts through the outbox. */
export const Posting = Schema.Struct({ ...Payment.fields, posting: Schema.Number })

/** The choices a pipeline makes; the defaults are the correct ones. */
export interface Variant {
  /** The ledger's event goes out through the outbox, or is published right after the commit (bug). */
  readonly publishing: "outbox" | "after-commit"
  /** The ledger checks its dedupe record in the posting's transaction, or before it (bug: a race). */
  readonly ledgerDedupe: "in-transaction" | "check-then-post"
  /** How the webhook signature is checked: over the raw bytes, or over re-serialised JSON (bug). */
  readonly verifier: "raw-bytes" | "reserialised"
  /** The consumer's deduplication: the idempotency middleware, or none (bug). */
  readonly dedupe: "idempotent" | "none"
  /** Acknowledge the delivery before processing it (bug). */
  readonly ackFirst: boolean
  /** The consumer passes a stable idempotency key to the downstream (false: a key per attempt, a bug). */
  readonly idempotencyKey: boolean
  /** Dead letters go through the transport's atomic move, or are acked then published in the background (bug). */
  readonly deadLetter: "transport" | "ack-then-publish"
  /** Bounded deliveries, or every failure retried forever (bug). */
  readonly retries: "bounded" | "unbounded"
  /** Idempotency-key retention. */
  readonly retention: Duration.DurationInput
  /** Probes a half-open breaker admits (the policy declares 1). */
  readonly permittedProbes: number
  /** Retry jitter ("none": clients that failed together retry together, a bug). */
  readonly jitter: Backoff.Jitter
  /** One breaker per process, or a new breaker per message (bug: it never sees enough calls to open). */
  readonly breaker: "per-process" | "per-message"
  /** Failures classified by the taxonomy, or every failure treated as permanent (bug: instant dead letters). */
  readonly classification: "taxonomy" | "all-permanent"
  /** Retry backoff, or none at all (bug: a hot loop against a failing dependency). */
  readonly backoff: "exponential" | "none"
  /** Transient dead letters are replayed after the outage, or left in the store (bug). */
  readonly replay: boolean
  /** Outbox relay processes running at once. */
  readonly relays: number
  /** Rows a relay claims per round (default 10); a small batch spreads a key's rows over several claims. */
  readonly relayBatch: number
  /** Replayer processes running at once. */
  readonly replayers: number
  /** Replay rate, messages per second. */
  readonly replayRate: number
  /** How long a replay claim protects an entry. */
  readonly claimLease: Duration.DurationInput
  /**
   * How the partner hears of a posting: the consumer stores a delivery for the durable dispatcher, or sends it
   * itself with the in-process `Sender`, retrying inside the handler (bug: a retry sleep outlives the
   * visibility timeout, the message is redelivered, and the partner gets it twice), or not at all.
   */
  readonly notify: "dispatcher" | "sender-in-consumer" | "none"
  /**
   * A rate limit on the partner's endpoint, which the dispatcher processes keep together through the
   * `rateLimit` option: at most `limit` requests in any window of `windowMillis`; a permit not free within
   * `maxWaitMillis` is refused (nothing is sent or recorded, and the attempt is made again later). Default none.
   */
  readonly partnerRate: PartnerRate | undefined
  /**
   * Where the partner limiter keeps its state: the world's shared rate-limiter store, as instances sharing a
   * Redis or SQL store do, or a memory store each dispatcher process makes for itself (bug: each keeps the
   * limit, together they exceed it).
   */
  readonly partnerLimiter: "shared" | "per-process"
  /**
   * The dispatchers' schedule: the delay before each attempt of a partner notification, one entry an attempt;
   * a delivery still failing after the last is given up as exhausted. Default {@link dispatchSchedule}.
   */
  readonly dispatchSchedule: ReadonlyArray<Duration.DurationInput>
}

/** The partner's rate limit the dispatchers keep (see {@link Variant.partnerRate}). */
export interface PartnerRate {
  readonly limit: number
  readonly windowMillis: number
  readonly maxWaitMillis: number
}

/** The dispatchers' default schedule: the delay before each attempt of a partner notification, one entry an attempt. */
export const dispatchSchedule: ReadonlyArray<Duration.DurationInput> = ["0 millis", "1 second", "5 seconds", "30 seconds", "1 minute", "2 minutes"]

/** The correct pipeline's choices. */
export const correct: Variant = {
  publishing: "outbox",
  ledgerDedupe: "in-transaction",
  verifier: "raw-bytes",
  dedupe: "idempotent",
  ackFirst: false,
  idempotencyKey: true,
  deadLetter: "transport",
  retries: "bounded",
  retention: "1 hour",
  permittedProbes: 1,
  jitter: "full",
  breaker: "per-process",
  classification: "taxonomy",
  backoff: "exponential",
  replay: true,
  relays: 1,
  relayBatch: 10,
  replayers: 1,
  replayRate: 20,
  claimLease: "1 minute",
  notify: "dispatcher",
  partnerRate: undefined,
  partnerLimiter: "shared",
  dispatchSchedule
}

/** The topic the webhook receiver publishes to. */
export const paymentsTopic = "payments"
/** The topic the relay publishes the ledger's postings to, which the downstream consumer reads. */
export const topic = "postings"

const redeliveryDelay = (attempt: number) => Duration.millis(Math.min(2_000, 100 * 2 ** (attempt - 1)))
const encoder = new TextEncoder()
const decoder = new TextDecoder()
const encodePayment = Envelope.encode(Payment)
const encodePosting = Envelope.encode(Posting)
/** The secret the partner verifies the postings' webhooks with. */
const partnerSecret = Signing.generateSecret()

/** Builds the pipeline for a variant inside the simulated world. */
export const pipeline = (overrides: Partial<Variant> = {}) => (world: World) => {
  const v: Variant = { ...correct, ...overrides }

  // --- webhook receiver: the real Standard Webhooks verifier and ingress ------------------------------------
  const verifier = Verifier.standard([world.secret], {
    source: "provider",
    tolerance: Duration.millis(world.history.policy.webhookTolerance)
  })
  // The anti-pattern: verifying a re-serialisation of the parsed JSON instead of the bytes that were signed.
  const reserialising: Verifier.Verifier = {
    scheme: verifier.scheme,
    source: verifier.source,
    verify: (request) => {
      let body = request.body
      try {
        body = encoder.encode(JSON.stringify(JSON.parse(decoder.decode(request.body))))
      } catch {
        // not JSON: verify the bytes as they are
      }
      return verifier.verify({ ...request, body })
    }
  }
  const receive = WebhookIngress.process({
    verifier: v.verifier === "raw-bytes" ? verifier : reserialising,
    schema: Payment,
    topic: paymentsTopic,
    type: "payment.received",
    subject: (data) => data.key
  })
  const ingress: Ingress = (request) =>
    Effect.map(Effect.exit(receive(request)), (exit) => WebhookIngress.answer(exit).status)

  // --- ledger: one posting per payment, its dedupe record and its outbox row in one transaction ------------
  const posted = world.table<number>("ledger")
  const appendPosting = Outbox.append(Posting)
  const post: Handler.Handler<typeof Payment.Type, unknown, Outbox.Outbox | MemoryOutboxStore.MemoryOutboxStore | Publisher> = (envelope) =>
    Effect.gen(function*() {
      const ref = envelope.data.ref
      // The anti-pattern: the dedupe check outside the transaction that posts; two deliveries both pass it.
      if (v.ledgerDedupe === "check-then-post" && posted.has(ref)) return
      if (v.ledgerDedupe === "check-then-post") yield* Effect.sleep(Duration.millis(1))
      const postings = yield* MemoryOutboxStore.transaction(Effect.gen(function*() {
        if (v.ledgerDedupe === "in-transaction" && posted.has(ref)) return []
        const number = posted.size
        const posting = yield* Envelope.make({
          type: "ledger.posted",
          source: "/ledger",
          subject: envelope.data.key,
          data: { ...envelope.data, posting: number },
          headers: Envelope.causedBy(envelope)
        })
        yield* MemoryOutboxStore.onCommit(() => {
          posted.set(ref, number)
          world.history.effect("ledger", ref)
        })
        if (v.publishing === "outbox") yield* appendPosting(topic, [posting])
        return [posting]
      }))
      if (v.publishing === "after-commit" && postings.length > 0) {
        // The anti-pattern: the event is published after the commit; a crash in between loses it.
        const publisher = yield* Publisher
        const payload = yield* encodePosting(postings[0]!)
        yield* publisher.publish(topic, [{ id: postings[0]!.id, key: postings[0]!.subject, payload, headers: {} }])
      }
    })
  const ledger = consume(paymentsTopic, post, {
    schema: Payment,
    group: "ledger",
    orderBy: "subject",
    concurrency: 4,
    maxAttempts: 10,
    redeliveryDelay
  })

  // --- postings consumer: downstream call through timeout → breaker → retry → idempotency ------------------
  const call = (envelope: Envelope.Envelope<typeof Payment.Type>) =>
    world.callDownstream({
      ref: envelope.data.ref,
      key: envelope.data.key,
      order: world.orderOf(topic, envelope.id),
      idempotencyKey: v.idempotencyKey ? envelope.id : `${envelope.id}#${envelope.attempt}`
    })
  const classified: Handler.Handler<typeof Payment.Type, DownstreamError | Failure.PermanentError> = v.classification === "taxonomy"
    ? call
    : (envelope) =>
      Effect.mapError(call(envelope), (error) => new Failure.PermanentError({ category: "dependency", message: error.message }))

  const retryPolicy = Retry.policy({
    schedule: v.backoff === "exponential"
      ? Backoff.exponential({ base: "100 millis", cap: "1 second", jitter: v.jitter })
      : Backoff.constant(Duration.zero),
    maxAttempts: v.retries === "bounded" ? 3 : 1_000
  })
  const breakerOptions: Breaker.Options = {
    window: { kind: "count", size: 10 },
    minimumCalls: 4,
    failureRateThreshold: 0.5,
    openDuration: "1 second",
    permittedProbes: v.permittedProbes
  }

  // --- partner notification: a signed webhook per applied posting ------------------------------------------
  const partner = { id: "partner", url: "https://partner.example/hooks", secrets: [partnerSecret] }
  const dispatcherOptions: Dispatcher.Options = {
    schedule: v.dispatchSchedule,
    attemptTimeout: "5 seconds",
    pollInterval: "1 second"
  }
  /** The dispatcher process's partner limit, if any, over the world's shared store (or its own, the bug). */
  const partnerLimit: Effect.Effect<Dispatcher.Options["rateLimit"], never, RateLimiterStore.RateLimiterStore> = Effect.suspend(() => {
    const rate = v.partnerRate
    if (rate === undefined) return Effect.succeed(undefined)
    const limiter = Effect.orDie(RateLimiter.make("partner", {
      limit: { kind: "slidingWindow", limit: rate.limit, window: Duration.millis(rate.windowMillis) },
      maxWait: Duration.millis(rate.maxWaitMillis)
    }))
    return Effect.map(
      v.partnerLimiter === "shared"
        ? limiter
        : Effect.provideServiceEffect(limiter, RateLimiterStore.RateLimiterStore, RateLimiterStore.makeMemory),
      (made) => ({ limiter: made })
    )
  })
  const notification = (envelope: Envelope.Envelope<typeof Payment.Type>) => ({
    id: `${envelope.id}:settled`,
    body: encoder.encode(JSON.stringify({ type: "payment.settled", data: { ref: envelope.data.ref, key: envelope.data.key } }))
  })
  type Notify = (handler: Handler.Handler<typeof Payment.Type, unknown>) => Handler.Handler<typeof Payment.Type, unknown>
  /** Adds the partner notification after the downstream call, inside the same idempotent unit. */
  const makeNotify: Effect.Effect<Notify, never, DispatchStore.DispatchStore> = Effect.suspend((): Effect.Effect<Notify, never, DispatchStore.DispatchStore> => {
    switch (v.notify) {
      case "none":
        return Effect.succeed((handler) => handler)
      case "dispatcher":
        return Effect.map(Dispatcher.make(dispatcherOptions), (dispatcher) => (handler) => (envelope) =>
          Effect.zipRight(handler(envelope), dispatcher.send(notification(envelope), [partner.id])))
      case "sender-in-consumer":
        return Effect.map(
          // Sleeps between attempts longer than the transport's 30 s visibility timeout, as the default schedule does.
          Sender.make({ schedule: ["0 millis", "45 seconds", "45 seconds"], attemptTimeout: "5 seconds" }),
          (sender) => (handler) => (envelope) => Effect.zipRight(handler(envelope), sender.send(partner, notification(envelope)))
        )
    }
  })

  const handlerWith = (breaker: Breaker.Breaker, notify: Notify) => {
    const guarded = pipe(classified, Handler.timeout("500 millis"), Breaker.middleware(breaker))
    // A breaker per message: made afresh for every delivery, it never sees enough calls to open.
    const perMessage: Handler.Handler<typeof Payment.Type, unknown> = (envelope) =>
      Effect.flatMap(Effect.orDie(Breaker.make("downstream", breakerOptions)), (fresh) =>
        pipe(classified, Handler.timeout("500 millis"), Breaker.middleware(fresh))(envelope))
    const timed = pipe(classified, Handler.timeout("500 millis"))
    const retried = notify(Retry.middleware(retryPolicy)(v.breaker === "per-process" ? guarded : Handler.withStage("breaker", timed, perMessage)))
    return v.dedupe === "idempotent"
      ? Idempotent.idempotent<typeof Payment.Type>({ namespace: "payments:", lease: "30 seconds", retention: v.retention, onInProgress: "nack" })(retried)
      : retried
  }

  const maxAttempts = v.retries === "bounded" ? 5 : Number.MAX_SAFE_INTEGER

  const consumer = Effect.gen(function*() {
    const breaker = yield* Effect.orDie(Breaker.make("downstream", breakerOptions))
    const handler = handlerWith(breaker, yield* makeNotify)
    if (v.ackFirst) {
      // The ack-first anti-pattern: settle, then work — a crash in between loses the message.
      const subscriber = yield* Subscriber
      return yield* Stream.runForEach(subscriber.subscribe(topic, { group: "consumer" }), (delivery) =>
        Effect.gen(function*() {
          yield* Effect.ignore(delivery.ack)
          const envelope = yield* Envelope.decode(Payment)(delivery.message.payload)
          yield* handler({ ...envelope, attempt: delivery.attempt })
        }).pipe(Effect.catchAll(() => Effect.void)))
    }
    if (v.deadLetter === "ack-then-publish") {
      // The anti-pattern: a failed message is acked at once and its dead letter published in the background.
      const subscriber = yield* Subscriber
      const publisher = yield* Publisher
      return yield* Pipeline.run(
        subscriber.subscribe(topic, { group: "consumer" }),
        (envelope: Envelope.Envelope<typeof Payment.Type>) =>
          Effect.catchAll(handler(envelope), (error) =>
            Effect.gen(function*() {
              const verdict = yield* Failure.classify(error)
              if (verdict.classification === "transient") return yield* Effect.fail(error)
              const payload = yield* Effect.orDie(encodePayment(envelope))
              const reason = new Delivery.DeadLetterReason({
                category: verdict.category,
                error: yield* Failure.record(error),
                attempts: envelope.attempt
              })
              const message = { id: envelope.id, topic, key: envelope.subject, payload, headers: {} }
              yield* Effect.forkDaemon(Effect.ignore(publisher.publish(Delivery.deadLetterTopic(topic), [{
                id: envelope.id,
                key: envelope.subject,
                payload,
                headers: Delivery.deadLetterHeaders(message, reason)
              }])))
            })),
        { schema: Payment, orderBy: "subject", concurrency: 4, maxAttempts, redeliveryDelay }
      )
    }
    return yield* consume(topic, handler, {
      schema: Payment,
      group: "consumer",
      orderBy: "subject",
      concurrency: 4,
      maxAttempts,
      redeliveryDelay
    })
  })

  // --- dead letters: drained into the store; transient ones replayed once the outage is over -------------
  const drain = DeadLetter.drain(topic)
  // Poison (category `schema`) stays dead-lettered for a person to look at; the rest failed on a dependency.
  const replayer = Effect.forever(
    Effect.zipRight(
      Effect.sleep("5 seconds"),
      Effect.forEach(["dependency", "timeout"] as const, (category) =>
        Effect.ignore(Replay.replay({ filter: { category }, rate: v.replayRate, claimLease: v.claimLease })), { discard: true })
    )
  )

  return Effect.gen(function*() {
    // The partner's endpoint is configuration, registered before any process runs.
    if (v.notify === "dispatcher") {
      yield* Effect.provide(Effect.flatMap(Dispatcher.make(dispatcherOptions), (d) => Effect.orDie(d.registerEndpoint(partner))), world.context)
    }
    for (let i = 0; i < 2; i++) yield* world.spawn(`ledger-${i + 1}`, Effect.provide(ledger, world.context))
    if (v.publishing === "outbox") {
      for (let i = 0; i < v.relays; i++) {
        const name = v.relays === 1 ? "relay" : `relay-${i + 1}`
        yield* world.spawn(name, Effect.provide(Relay.run({ batchSize: v.relayBatch, pollInterval: "1 second", relayId: name }), world.context))
      }
    }
    for (let i = 0; i < 2; i++) yield* world.spawn(`consumer-${i + 1}`, Effect.provide(consumer, world.context))
    yield* world.spawn("dead-letter-drain", Effect.provide(drain, world.context))
    if (v.replay) {
      for (let i = 0; i < v.replayers; i++) yield* world.spawn(`replayer-${i + 1}`, Effect.provide(replayer, world.context))
    }
    if (v.notify === "dispatcher") {
      for (let i = 0; i < 2; i++) {
        const worker = Effect.gen(function*() {
          const rateLimit = yield* partnerLimit
          const dispatcher = yield* Dispatcher.make({
            ...dispatcherOptions,
            workerId: `dispatcher-${i + 1}`,
            ...(rateLimit === undefined ? {} : { rateLimit })
          })
          return yield* dispatcher.run
        })
        yield* world.spawn(`dispatcher-${i + 1}`, Effect.provide(worker, world.context))
      }
    }
    return ingress
  })
}
