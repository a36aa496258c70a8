/**
 * Getting messages into the dead-letter store:
 * - the {@link deadLetter} middleware (stage `deadLetter`) stores an envelope the handler gave up on — a
 *   permanent failure, or a transient one on its last attempt — and then succeeds, so the message is acked;
 * - {@link drain} moves what a transport dead-lettered (`${topic}.dlq`, with reason headers) into the store,
 *   so messages the pipeline itself dead-letters (undecodable bytes, exhausted redeliveries) land there too.
 *
 * Nothing is lost on the way: if storing fails, the original failure propagates and the transport keeps
 * the message.
 */
import { AuditLog, Delivery, Envelope, Failure, Handler, Observe, Supervise, Telemetry, TraceContext } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { Effect, Metric, Schema, Stream } from "effect"
import * as Store from "./DeadLetterStore.js"

/** Settings of {@link deadLetter}. */
export interface Options<A, I, RS> {
  /** The topic the handler consumes: where a replay sends the message back. */
  readonly topic: string
  /** The payload schema, to store the envelope as the same CloudEvents bytes a producer sends. */
  readonly schema: Schema.Schema<A, I, RS>
  /**
   * The delivery attempt on which a transient failure is given up on. Default: 1 when a retry stage is
   * inside this one (retry already used its attempts), otherwise 10 (the pipeline's default).
   */
  readonly maxAttempts?: number
}

/**
 * Stores the envelope in `store` when the handler fails permanently or on its last attempt, choosing the
 * category from the error (`Failure.classify`: decode → schema, 401/403 → auth, timeouts → timeout,
 * 5xx / open breaker → dependency), then succeeds so the delivery is acked. Earlier transient failures
 * propagate for the pipeline to nack. If the store fails, the original error propagates (never lost).
 */
export const deadLetter = <A, I, RS>(store: Store.Service, options: Options<A, I, RS>) => {
  const encode = Envelope.encode(options.schema)
  return <E, R>(handler: Handler.Handler<A, E, R>): Handler.Handler<A, E, R | RS> => {
    const maxAttempts = options.maxAttempts ?? (Handler.stagesOf(handler).includes("retry") ? 1 : 10)
    return Handler.withStage("deadLetter", handler, (envelope: Envelope.Envelope<A>) =>
      Effect.catchAll(handler(envelope), (error) =>
        Effect.gen(function*() {
          const verdict = yield* Failure.classify(error)
          if (verdict.classification === "transient" && envelope.attempt < maxAttempts) {
            return yield* Effect.fail(error)
          }
          const stored = yield* encode(envelope).pipe(
            Effect.flatMap((payload) =>
              // The entry keeps the trace it failed in, so a replay can link back to it.
              Effect.flatMap(TraceContext.inject(envelope.headers), (headers) =>
                store.add({
                  message: { id: envelope.id, topic: options.topic, key: envelope.subject, payload, headers },
                  category: verdict.category,
                  error: Failure.toRecord(error, verdict),
                  attempts: Math.max(1, envelope.attempt)
                }))
            ),
            Effect.tap((entry) =>
              Effect.zipRight(Metric.increment(deadLetteredMetric(entry.originTopic, entry.category)), updateDepth(store))
            ),
            deadLetterSpan(options.topic, envelope.id, verdict.category),
            Effect.either
          )
          if (stored._tag === "Left") {
            yield* Effect.logError("dead-lettering failed; the original failure propagates so the message is kept", stored.left)
              .pipe(Effect.annotateLogs({ envelopeId: envelope.id, topic: options.topic }))
            return yield* Effect.fail(error)
          }
          yield* announceStored(stored.right)
          yield* Effect.logWarning("message dead-lettered").pipe(
            Effect.annotateLogs({ envelopeId: envelope.id, entryId: stored.right.id, category: verdict.category })
          )
        })))
  }
}

const deadLetteredMetric = (topic: string, category: string) =>
  Metric.tagged(Metric.tagged(Telemetry.deadLettered, "destination", topic), "category", category)

/**
 * Reads the store's depth into `bulwark_dlq_depth`. Run after adds (this module does) and on a schedule,
 * since other processes (the CLI, a replay elsewhere) change the depth too. A depth that cannot be read
 * leaves the gauge stale and is logged: the operation it follows succeeded.
 */
export const updateDepth = (store: Store.Service): Effect.Effect<void> =>
  store.depth.pipe(
    Effect.flatMap((depth) => Metric.set(Telemetry.dlqDepth, depth)),
    Effect.catchAll((error) => Effect.logWarning("dead-letter depth could not be read for bulwark_dlq_depth", error))
  )

/** Storing one message as a `dead_letter {topic}` producer span (the dead-letter store is its destination). */
const deadLetterSpan = (topic: string, messageId: string, category: string) =>
  Telemetry.withSafeSpan(`dead_letter ${topic}`, {
    kind: "producer",
    attributes: {
      ...Telemetry.messagingAttributes({ operationType: "send", operationName: "dead_letter", destination: topic }),
      [Telemetry.Attr.messageId]: messageId,
      [Telemetry.Attr.deadLetterCategory]: category
    }
  })

/** Announces a stored entry (`dead-letter` `stored`). */
const announceStored = (entry: Store.DeadLetterEntry): Effect.Effect<void> =>
  Effect.zipRight(
    Observe.emitWith("dead-letter", "stored", () => ({
      entryId: entry.id,
      topic: entry.originTopic,
      messageId: entry.messageId,
      category: entry.category,
      attempts: entry.attempts
    })),
    AuditLog.record(() => ({
      eventId: entry.messageId,
      stage: "dead-lettered",
      component: "dead-letter",
      topic: entry.originTopic,
      outcome: "stored",
      attempt: entry.attempts,
      category: entry.category,
      detail: { entryId: entry.id }
    }))
  )

/** The reason recorded when a dead-lettered copy arrives without readable reason headers. */
const unknownReason = (attempts: number) =>
  new Delivery.DeadLetterReason({
    category: "unknown",
    error: new Failure.FailureRecord({
      tag: "Unknown",
      message: "dead-lettered without a readable reason",
      classification: "permanent",
      category: "unknown"
    }),
    attempts
  })

/** Settings of {@link drain}. */
export interface DrainOptions {
  /** The consumer group on the `.dlq` topic. Default `"bulwark-dead-letter"`. */
  readonly group?: string
}

/** Stores one dead-lettered copy; the origin topic comes from its headers, else from `topic`. */
export const storeDelivery = (store: Store.Service, topic: string, delivery: Delivery.Delivery) => {
  const { message } = delivery
  const reason = Delivery.readDeadLetterReason(message.headers) ?? unknownReason(delivery.attempt)
  const originTopic = message.headers[Delivery.DeadLetterHeaders.originTopic] ?? topic
  // Not counted in `bulwark_dead_lettered_total`: the pipeline counted the message when it dead-lettered it.
  return Effect.tap(
    store.add({
      message: { ...message, topic: originTopic },
      category: reason.category,
      error: reason.error,
      attempts: reason.attempts,
      // A copy carries its replay generation, so a stale one (redelivered after a crash) cannot revive its entry.
      replayGeneration: Store.copyGeneration(message.headers)
    }),
    announceStored
  ).pipe(
    deadLetterSpan(originTopic, message.id, reason.category),
    TraceContext.withRemoteParent(message.headers)
  )
}

/**
 * Consumes `${topic}.dlq` into the store until interrupted: each copy is stored, then acked; a copy that
 * cannot be stored is nacked (with a delay) and comes back. Supervised (`Supervise`, loop
 * `dead-letter-drain:<topic>`): a subscription that breaks is opened again after a jittered, capped backoff.
 */
export const drain = (
  topic: string,
  options: DrainOptions = {}
): Effect.Effect<void, Transport.SubscribeError, Transport.Subscriber | Store.DeadLetterStore> =>
  Effect.gen(function*() {
    const store = yield* Store.DeadLetterStore
    const subscriber = yield* Transport.Subscriber
    yield* Supervise.run({
      name: `dead-letter-drain:${topic}`,
      isTransient: (error) => error instanceof Transport.SubscribeError
    }, (supervisor) =>
    subscriber.subscribe(Delivery.deadLetterTopic(topic), { group: options.group ?? "bulwark-dead-letter" }).pipe(
      Stream.tap(() => supervisor.up),
      Stream.runForEach((delivery) =>
        storeDelivery(store, topic, delivery).pipe(
          Effect.matchEffect({
            onFailure: (error) =>
              Effect.zipRight(
                Effect.logWarning("could not store a dead-lettered message; it will come back", error),
                delivery.nack({ delay: "1 second" })
              ),
            onSuccess: () => delivery.ack
          }),
          // A failed settle is redelivered by the transport; storing twice updates the same entry.
          Effect.catchAll((error) => Effect.logWarning("settling a dead-letter copy failed", error))
        )
      )
    ))
  })
