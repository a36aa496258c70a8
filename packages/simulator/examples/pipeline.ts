/**
 * A realistic pipeline — webhook → idempotent handler (ledger + outbox in one transaction) → relay →
 * consumer calling a downstream service through timeout, breaker and retry — written against the core
 * abstractions (`Envelope`, `Handler`, `Pipeline`, `Transport`), and the anti-patterns of the catalogue as
 * one-field deviations from it. `variant({})` is the correct pipeline; each bug flips one choice.
 */
import { Delivery, Envelope, Failure, Handler, Pipeline } from "@bulwark/core"
import { Publisher, Subscriber, type OutgoingMessage } from "@bulwark/transport/Transport"
import { Duration, Effect, Schema, Stream } from "effect"
import { epoch } from "../src/Scheduler.js"
import type { Ingress, WebhookRequest, World } from "../src/World.js"
import { WebhookHeaders } from "../src/World.js"

/** The provider's webhook payload. */
export const Payment = Schema.Struct({
  ref: Schema.String,
  key: Schema.String,
  amount: Schema.Number,
  poison: Schema.Boolean
})
/** The event the ledger emits through the outbox. */
export const Posted = Schema.Struct({
  ...Payment.fields,
  row: Schema.String,
  order: Schema.Number
})

/** The choices a pipeline makes; the defaults are the correct ones. */
export interface Variant {
  /** How the webhook signature is checked: over the raw bytes, or over re-serialised JSON (bug). */
  readonly verifier: "raw-bytes" | "reserialised"
  /** The inbound consumer's deduplication. */
  readonly dedupe: "claim-in-transaction" | "record-after-effect" | "check-then-set"
  /** Acknowledge the delivery before processing it (bug). */
  readonly ackFirst: boolean
  /** Publish events through the outbox relay, or right after the commit (bug). */
  readonly publishing: "outbox" | "after-commit"
  /** Relay publishes a batch in commit order, or sorted by event id — random UUIDs — (bug). */
  readonly relay: "commit-order" | "by-event-id"
  /** The consumer passes a stable idempotency key to the downstream (false: a non-idempotent consumer). */
  readonly idempotencyKey: boolean
  /** Dead letters go through the transport's atomic move, or are acked then published in the background (bug). */
  readonly deadLetter: "transport" | "ack-then-publish"
  /** Bounded deliveries with a DLQ, or every failure retried forever (bug). */
  readonly retries: "bounded" | "unbounded"
  /** Idempotency-key retention, ms. */
  readonly retention: number
  /** Concurrent half-open probes of the breaker (Infinity: stampede bug). */
  readonly halfOpenProbes: number
  /** Jittered retry backoff (false: synchronised clients bug). */
  readonly jitter: boolean
}

/** The correct pipeline's choices. */
export const correct: Variant = {
  verifier: "raw-bytes",
  dedupe: "claim-in-transaction",
  ackFirst: false,
  publishing: "outbox",
  relay: "commit-order",
  idempotencyKey: true,
  deadLetter: "transport",
  retries: "bounded",
  retention: 3_600_000,
  halfOpenProbes: 1,
  jitter: true
}

const decodePayment = Schema.decodeUnknownEither(Schema.parseJson(Payment))
const decoder = new TextDecoder()
const encodePosted = Envelope.encode(Posted)

const redeliveryDelay = (attempt: number) => Duration.millis(Math.min(2_000, 100 * 2 ** (attempt - 1)))

/** Builds the pipeline for a variant inside the simulated world. */
export const pipeline = (overrides: Partial<Variant> = {}) => (world: World) => {
  const v: Variant = { ...correct, ...overrides }
  const tolerance = world.history.policy.webhookTolerance

  // --- webhook receiver ---------------------------------------------------------------------------------
  const verify = (request: WebhookRequest): boolean => {
    const wallNow = world.wallNow(epoch)
    if (v.verifier === "raw-bytes") return world.verify(request, wallNow, tolerance)
    // The anti-pattern: verifying a re-serialisation of the parsed JSON instead of the bytes that were signed.
    try {
      const canonical = JSON.stringify(JSON.parse(decoder.decode(request.body)))
      const timestamp = request.headers[WebhookHeaders.timestamp] ?? ""
      return world.sign(timestamp, canonical) === request.headers[WebhookHeaders.signature] &&
        Math.abs(wallNow - Number(timestamp)) <= tolerance
    } catch {
      return false
    }
  }
  const publishInbound = (data: typeof Payment.Type) =>
    Effect.gen(function*() {
      const envelope = yield* Envelope.make({ type: "payment.received", source: "/sim/provider", subject: data.key, data })
      const payload = yield* Envelope.encode(Payment)(envelope)
      yield* world.publisher.publish("inbound", [{ id: envelope.id, key: data.key, payload, headers: {} }])
    })
  const ingress: Ingress = (request) =>
    Effect.gen(function*() {
      if (!verify(request)) return 401
      const parsed = decodePayment(decoder.decode(request.body))
      if (parsed._tag === "Left") return 400
      const published = yield* Effect.either(publishInbound(parsed.right))
      return published._tag === "Right" ? 200 : 503
    }).pipe(Effect.orDie)

  // --- inbound consumer: ledger effect + outbox row, deduplicated ------------------------------------------
  const publishRows = (rows: ReadonlyArray<{ id: string; order: number; ref: string; key: string; payload: unknown }>) =>
    Effect.gen(function*() {
      const messages: Array<OutgoingMessage> = []
      for (const row of rows) {
        const data = { ...(row.payload as typeof Payment.Type), row: row.id, order: row.order }
        const envelope = yield* Envelope.make({
          ...(v.relay === "commit-order" ? { id: row.id } : {}),
          type: "ledger.posted",
          source: "/sim/ledger",
          subject: row.key,
          data
        })
        messages.push({ id: envelope.id, key: row.key, payload: yield* encodePosted(envelope), headers: { "outbox-row": row.id } })
      }
      // The anti-pattern sorts the batch by event id, which is random, instead of keeping commit order.
      if (v.relay === "by-event-id") messages.sort((a, b) => a.id.localeCompare(b.id))
      yield* world.publisher.publish("events", messages)
    })

  const inbound: Handler.Handler<typeof Payment.Type> = (envelope) => {
    const { ref, key } = envelope.data
    const apply = (claim: boolean) =>
      world.transaction((tx) =>
        Effect.gen(function*() {
          yield* world.crashPoint("before-effect", envelope.id, ref)
          if (claim && !tx.claim(ref)) return []
          if (claim) yield* world.crashPoint("between-dedupe-and-effect", envelope.id, ref)
          if (v.dedupe === "check-then-set") tx.record(ref)
          tx.effect("ledger", ref)
          return [tx.emit({ ref, key, payload: envelope.data })]
        }), ref)
    return Effect.gen(function*() {
      let rows: ReadonlyArray<{ id: string; order: number; ref: string; key: string; payload: unknown }>
      if (v.dedupe === "claim-in-transaction") {
        rows = yield* apply(true)
      } else {
        if (yield* world.isRecorded(ref)) return
        rows = yield* apply(false)
        if (v.dedupe === "record-after-effect") {
          yield* world.crashPoint("between-dedupe-and-effect", envelope.id, ref)
          yield* world.record(ref)
        }
      }
      yield* world.crashPoint("after-commit-before-publish", envelope.id, ref)
      if (v.publishing === "after-commit" && rows.length > 0) {
        yield* Effect.orDie(publishRows(rows))
        yield* world.markPublished(world.outbox.filter((r) => rows.some((x) => x.id === r.id)))
      }
    })
  }

  // --- relay ---------------------------------------------------------------------------------------------
  const relay = Effect.forever(
    Effect.gen(function*() {
      yield* Effect.sleep(Duration.millis(50))
      const rows = world.unpublished(10)
      if (rows.length === 0) return
      yield* publishRows(rows)
      yield* world.crashPoint("inside-relay-batch")
      yield* world.markPublished(rows)
    }).pipe(Effect.catchAllCause(() => Effect.void))
  )

  // --- events consumer: downstream call through timeout, breaker, retry ------------------------------------
  const breaker = world.breaker({ halfOpenProbes: v.halfOpenProbes })
  const retry = world.retry({ attempts: 3, base: 100, jitter: v.jitter })
  const call = (data: typeof Posted.Type) =>
    retry((attempt) =>
      breaker(
        world.callDownstream({
          ref: data.ref,
          key: data.key,
          order: data.order,
          idempotencyKey: v.idempotencyKey ? data.row : undefined,
          attempt
        }).pipe(Effect.timeoutFail({
          duration: Duration.millis(500),
          onTimeout: () => new Failure.TransientError({ category: "timeout", message: `downstream call for ${data.ref} timed out` })
        }))
      ), data.ref)
  const events: Handler.Handler<typeof Posted.Type, unknown> = (envelope) => {
    const attempt = call(envelope.data)
    if (v.retries === "unbounded") {
      return Effect.mapError(attempt, (error) => new Failure.TransientError({ category: "unknown", message: String(error) }))
    }
    if (v.deadLetter === "ack-then-publish") {
      return Effect.catchAll(attempt, (error) =>
        Effect.gen(function*() {
          const verdict = yield* Failure.classify(error)
          if (verdict.classification === "transient") return yield* Effect.fail(error)
          // The anti-pattern: the delivery is acked while the dead letter is still being published.
          const message: OutgoingMessage = {
            id: envelope.id,
            key: envelope.subject,
            payload: yield* Effect.orDie(encodePosted(envelope)),
            headers: { [Delivery.DeadLetterHeaders.category]: verdict.category }
          }
          yield* Effect.forkDaemon(
            Effect.zipRight(world.crashPoint("before-dead-letter"), world.publisher.publish("events.dlq", [message]))
          )
        }))
    }
    return attempt
  }

  const consumer = <A, I>(topic: string, schema: Schema.Schema<A, I>, handler: Handler.Handler<A, unknown>, maxAttempts: number) =>
    Effect.flatMap(Subscriber, (subscriber) =>
      Pipeline.run(subscriber.subscribe(topic), handler, {
        schema,
        orderBy: "subject",
        concurrency: 4,
        maxAttempts,
        redeliveryDelay
      }))

  // The ack-first anti-pattern: settle, then work — a crash in between loses the message.
  const ackFirstConsumer = Effect.flatMap(Subscriber, (subscriber) =>
    Stream.runForEach(subscriber.subscribe("inbound"), (delivery) =>
      Effect.gen(function*() {
        yield* Effect.ignore(delivery.ack)
        const envelope = yield* Envelope.decode(Payment)(delivery.message.payload)
        yield* inbound({ ...envelope, attempt: delivery.attempt })
      }).pipe(Effect.catchAllCause(() => Effect.void))))

  const maxAttempts = v.retries === "unbounded" ? Number.MAX_SAFE_INTEGER : 5
  return Effect.gen(function*() {
    for (let i = 0; i < 2; i++) {
      yield* Effect.forkScoped(
        Effect.provideService(v.ackFirst ? ackFirstConsumer : consumer("inbound", Payment, inbound, 5), Subscriber, world.subscriber)
      )
      yield* Effect.forkScoped(
        Effect.provideService(consumer("events", Posted, events, maxAttempts), Subscriber, world.subscriber)
      )
    }
    if (v.publishing === "outbox") yield* Effect.forkScoped(relay)
    return ingress
  }).pipe(Effect.provideService(Publisher, world.publisher))
}
