/**
 * Instrumentation for every stage an event passes through, after the OpenTelemetry messaging semantic
 * conventions: webhook receive and verify, transport publish / receive / settle, the consumer's handler,
 * idempotency claims, breaker state changes, outbox appends and dead-lettering.
 *
 * Everything is a wrapper: a handler middleware (stage `tracing`, outermost), or a layer that decorates a port
 * (`Transport.Publisher`, `Transport.Subscriber`, `Outbox`, `IdempotencyStore`, `DeadLetterStore`) with the same
 * port. Wrapped code needs no change, and without a tracer installed the spans cost next to nothing.
 *
 * Propagation: producers write the W3C context of their span into the envelope headers (which the CloudEvents
 * encoding carries as `traceparent` / `tracestate` extension attributes) and consumers continue it, so
 * webhook → queue → worker → outbox → relay → consumer is one trace. Correlation and causation ids become span
 * annotations, so every span below a consumer carries them.
 *
 * Attributes are built from an explicit list (ids, types, topics, counts, outcomes); payloads, subjects and
 * headers other than the trace and correlation ones are never copied, and a failure is recorded on a span by its
 * type only (`error.type`), since error messages can quote request data.
 */
import { Delivery, Envelope, Handler } from "@bulwark/core"
import type * as Breaker from "@bulwark/circuit-breaker/Breaker"
import * as DeadLetterStore from "@bulwark/dead-letter/DeadLetterStore"
import * as IdempotencyStore from "@bulwark/idempotency/IdempotencyStore"
import * as Outbox from "@bulwark/outbox/Outbox"
import * as OutboxStore from "@bulwark/outbox/OutboxStore"
import * as Transport from "@bulwark/transport/Transport"
import * as Ingress from "@bulwark/webhook/Ingress"
import type * as Verifier from "@bulwark/webhook/Verifier"
import { Cause, Clock, Context, Data, Effect, Exit, Layer, Metric, Option, Stream, type Tracer } from "effect"
import * as Metrics from "./Metrics.js"
import * as Propagation from "./Propagation.js"

/** Attribute names used on Bulwark spans (OpenTelemetry semantic conventions where one exists). */
export const Attr = {
  messagingSystem: "messaging.system",
  operationType: "messaging.operation.type",
  operationName: "messaging.operation.name",
  destination: "messaging.destination.name",
  consumerGroup: "messaging.consumer.group.name",
  messageId: "messaging.message.id",
  conversationId: "messaging.message.conversation_id",
  batchCount: "messaging.batch.message_count",
  eventId: "cloudevents.event_id",
  eventType: "cloudevents.event_type",
  eventSource: "cloudevents.event_source",
  correlationId: "bulwark.correlation_id",
  causationId: "bulwark.causation_id",
  attempt: "bulwark.delivery.attempt",
  errorType: "error.type",
  idempotencyOutcome: "bulwark.idempotency.outcome",
  idempotencyHit: "bulwark.idempotency.hit",
  breakerKey: "bulwark.breaker.key",
  breakerState: "bulwark.breaker.state",
  deadLetterCategory: "bulwark.dead_letter.category",
  webhookSource: "bulwark.webhook.source",
  webhookScheme: "bulwark.webhook.scheme",
  webhookDuplicate: "bulwark.webhook.duplicate",
  bodySize: "http.request.body.size"
} as const

/** `messaging.system` when the caller does not name one. */
export const defaultSystem = "bulwark"

/** Options shared by the messaging instrumentation. */
export interface MessagingOptions {
  /** `messaging.system`: `rabbitmq`, `nats`, `redis`, `postgresql`, … Default `"bulwark"`. */
  readonly system?: string
}

/** The correlation attributes of an envelope: its conversation (correlation) id and, when it has one, its cause. */
export const correlationAttributes = (
  envelope: { readonly id: string; readonly headers: Readonly<Record<string, string>> }
): Record<string, string> => {
  const correlation = envelope.headers[Envelope.HeaderNames.correlationId] ?? envelope.id
  const causation = envelope.headers[Envelope.HeaderNames.causationId]
  return {
    [Attr.conversationId]: correlation,
    [Attr.correlationId]: correlation,
    ...(causation === undefined ? {} : { [Attr.causationId]: causation })
  }
}

const envelopeAttributes = (envelope: Envelope.Envelope<unknown>): Record<string, unknown> => ({
  [Attr.messageId]: envelope.id,
  [Attr.eventId]: envelope.id,
  [Attr.eventType]: envelope.type,
  [Attr.eventSource]: envelope.source,
  ...correlationAttributes(envelope)
})

const errorTypeOf = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    const tag = (error as { _tag?: unknown })._tag
    if (typeof tag === "string") return tag
    if (error instanceof Error) return error.name
  }
  return typeof error
}

/** What a span records of a failure: its type only. */
class SpanFailure extends Data.TaggedError("SpanFailure")<{ readonly original: unknown; readonly type: string }> {
  override get message(): string {
    return this.type
  }
}

/**
 * `Effect.withSpan`, except that a failure reaches the span as its type alone (status error, `error.type`),
 * and the caller still sees the original error.
 */
export const withSafeSpan = (name: string, options: Tracer.SpanOptions = {}) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  effect.pipe(
    Effect.tapError((error) => Effect.annotateCurrentSpan(Attr.errorType, errorTypeOf(error))),
    Effect.mapError((error) => new SpanFailure({ original: error, type: errorTypeOf(error) })),
    Effect.withSpan(name, options),
    Effect.mapError((failure) => failure.original as E)
  )

const spanEvent = (name: string, attributes: Record<string, unknown>): Effect.Effect<void> =>
  Effect.flatMap(Effect.option(Effect.currentSpan), (span) =>
    Option.isNone(span)
      ? Effect.void
      : Effect.flatMap(Clock.currentTimeNanos, (now) => Effect.sync(() => span.value.event(name, now, attributes))))

// --- consumer ------------------------------------------------------------------------------------------------

/** Options of the consumer middleware. */
export interface ConsumerOptions extends MessagingOptions {
  /** The topic (queue) consumed: `messaging.destination.name` and part of the span name. */
  readonly destination: string
  /** The consumer group, when there is one. */
  readonly group?: string
}

const consumerAttributes = (options: ConsumerOptions, operationName: string): Record<string, unknown> => ({
  [Attr.messagingSystem]: options.system ?? defaultSystem,
  [Attr.operationType]: "process",
  [Attr.operationName]: operationName,
  [Attr.destination]: options.destination,
  ...(options.group === undefined ? {} : { [Attr.consumerGroup]: options.group })
})

const observeDuration = (destination: string, startMillis: number, exit: Exit.Exit<unknown, unknown>) =>
  Effect.flatMap(Clock.currentTimeMillis, (end) =>
    Metric.update(
      Metrics.handlerDuration.pipe(
        Metric.tagged("destination", destination),
        Metric.tagged("outcome", Exit.isSuccess(exit) ? "success" : "failure")
      ),
      (end - startMillis) / 1000
    ))

/**
 * The consumer middleware (stage `tracing`, the outermost): one `process {destination}` span per delivery,
 * continuing the trace the envelope carries, with the correlation ids annotated on it and on every span below.
 * Also counts received events and redeliveries and times the handler.
 */
export const middleware = (options: ConsumerOptions) =>
<A, E, R>(handler: Handler.Handler<A, E, R>): Handler.Handler<A, E, R> => {
  const base = consumerAttributes(options, "process")
  const received = Metric.tagged(Metric.tagged(Metrics.eventsReceived, "stage", "consume"), "destination", options.destination)
  const redelivered = Metric.tagged(Metrics.redeliveries, "destination", options.destination)
  return Handler.withStage("tracing", handler, (envelope: Envelope.Envelope<A>) =>
    Effect.gen(function*() {
      yield* Metric.increment(received)
      if (envelope.attempt > 1) yield* Metric.increment(redelivered)
      const start = yield* Clock.currentTimeMillis
      return yield* handler(envelope).pipe(
        withSafeSpan(`process ${options.destination}`, {
          kind: "consumer",
          attributes: { ...base, ...envelopeAttributes(envelope), [Attr.attempt]: envelope.attempt }
        }),
        Propagation.withRemoteParent(envelope.headers),
        Effect.annotateSpans(correlationAttributes(envelope)),
        Effect.onExit((exit) => observeDuration(options.destination, start, exit))
      )
    }))
}

/**
 * Processes a batch in one `process {destination}` span linked to every message's producer (the messaging
 * conventions' batch shape: a batch has many parents, so it has none and links to all).
 */
export const processBatch = (options: ConsumerOptions, envelopes: ReadonlyArray<Envelope.Envelope<unknown>>) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  const links = envelopes.flatMap((envelope) =>
    Option.toArray(Propagation.linkTo(envelope.headers, { [Attr.messageId]: envelope.id, ...correlationAttributes(envelope) }))
  )
  const received = Metric.tagged(Metric.tagged(Metrics.eventsReceived, "stage", "consume"), "destination", options.destination)
  return Effect.zipRight(
    Metric.incrementBy(received, envelopes.length),
    withSafeSpan(`process ${options.destination}`, {
      kind: "consumer",
      root: true,
      links,
      attributes: { ...consumerAttributes(options, "process"), [Attr.batchCount]: envelopes.length }
    })(effect)
  )
}

// --- producer ------------------------------------------------------------------------------------------------

interface Prepared {
  readonly message: Transport.OutgoingMessage
  readonly envelope: Option.Option<Envelope.Envelope<unknown>>
  readonly carried: Option.Option<Tracer.ExternalSpan>
}

const prepare = (message: Transport.OutgoingMessage): Effect.Effect<Prepared> =>
  Effect.map(Propagation.peek(message.payload), (envelope) => {
    const headers = Option.match(envelope, { onNone: () => message.headers, onSome: (e) => ({ ...message.headers, ...e.headers }) })
    return { message, envelope, carried: Propagation.extract(headers) }
  })

const correlationHeaderNames = [Envelope.HeaderNames.correlationId, Envelope.HeaderNames.causationId] as const

/** Writes `context` into a message: the envelope inside its payload and the transport headers alike. */
const stamp = (prepared: Prepared, context: Record<string, string>): Effect.Effect<Transport.OutgoingMessage> =>
  Option.match(prepared.envelope, {
    onNone: () => Effect.succeed({ ...prepared.message, headers: { ...prepared.message.headers, ...context } }),
    onSome: (envelope) => {
      const { [Envelope.HeaderNames.tracestate]: _dropped, ...kept } = envelope.headers
      const headers = { ...kept, ...context }
      const transportHeaders: Record<string, string> = { ...prepared.message.headers, ...context }
      // The correlation ids ride in transport headers too, so a receive span can read them without decoding.
      for (const name of correlationHeaderNames) {
        const value = headers[name]
        if (value !== undefined) transportHeaders[name] = value
      }
      return Effect.map(
        Propagation.rewritePayload(prepared.message.payload, envelope, headers),
        (payload) => ({ ...prepared.message, payload, headers: transportHeaders })
      )
    }
  })

const messageCorrelation = (prepared: Prepared): Record<string, string> =>
  Option.match(prepared.envelope, {
    onNone: () => correlationAttributes({ id: prepared.message.id, headers: prepared.message.headers }),
    onSome: correlationAttributes
  })

/**
 * A publisher whose every `publish` is a `send {topic}` producer span and whose messages carry that span's
 * context. A message that already carries a context of another trace (an outbox row, a forwarded message) is
 * forwarded untouched and linked; with no span around the call, a lone message's carried context becomes the
 * parent, so the relay's publish joins the trace of the append.
 */
export const tracePublisher = (
  publisher: Context.Tag.Service<Transport.Publisher>,
  options: MessagingOptions = {}
): Context.Tag.Service<Transport.Publisher> => ({
  publish: (topic, messages, publishOptions) =>
    Effect.gen(function*() {
      const prepared = yield* Effect.forEach(messages, prepare)
      const ambient = Option.getOrUndefined(yield* Effect.option(Effect.currentParentSpan))
      const lone = prepared.length === 1 ? Option.getOrUndefined(prepared[0]!.carried) : undefined
      const parent: Tracer.AnySpan | undefined = ambient ?? lone
      const links = prepared.flatMap((p) =>
        Option.toArray(p.carried).filter((span) => span.traceId !== parent?.traceId).map((span): Tracer.SpanLink => ({
          _tag: "SpanLink",
          span,
          attributes: { [Attr.messageId]: p.message.id }
        }))
      )
      const category = prepared[0]?.message.headers[Delivery.DeadLetterHeaders.category]
      const single = prepared.length === 1 ? prepared[0]! : undefined
      const attributes: Record<string, unknown> = {
        [Attr.messagingSystem]: options.system ?? defaultSystem,
        [Attr.operationType]: "send",
        [Attr.operationName]: "send",
        [Attr.destination]: topic,
        ...(single === undefined
          ? { [Attr.batchCount]: prepared.length }
          : { [Attr.messageId]: single.message.id, ...messageCorrelation(single) }),
        ...(category === undefined ? {} : { [Attr.deadLetterCategory]: category })
      }
      const send = Effect.gen(function*() {
        const context = yield* Propagation.currentHeaders
        const span = yield* Effect.currentSpan.pipe(Effect.option)
        const traceId = Option.match(span, { onNone: () => undefined, onSome: (s) => s.traceId })
        const stamped = yield* Effect.forEach(prepared, (p) =>
          Option.isSome(p.carried) && p.carried.value.traceId !== traceId ? Effect.succeed(p.message) : stamp(p, context))
        yield* publisher.publish(topic, stamped, publishOptions)
        if (category !== undefined) {
          yield* Metric.incrementBy(
            Metric.tagged(Metric.tagged(Metrics.deadLettered, "destination", topic), "category", category),
            stamped.length
          )
        }
      })
      return yield* withSafeSpan(`send ${topic}`, {
        kind: "producer",
        links,
        attributes,
        ...(parent === undefined ? { root: true } : { parent })
      })(send)
    })
})

/** Decorates the `Transport.Publisher` in context with {@link tracePublisher}. */
export const layerPublisher = (options: MessagingOptions = {}): Layer.Layer<Transport.Publisher, never, Transport.Publisher> =>
  Layer.effect(Transport.Publisher, Effect.map(Transport.Publisher, (publisher) => tracePublisher(publisher, options)))

// --- transport consumer side ---------------------------------------------------------------------------------

const messageContext = (message: Delivery.Message): Effect.Effect<Readonly<Record<string, string>>> =>
  message.headers[Envelope.HeaderNames.traceparent] !== undefined
    ? Effect.succeed(message.headers)
    : Effect.map(Propagation.peek(message.payload), Option.match({ onNone: () => message.headers, onSome: (e) => ({ ...message.headers, ...e.headers }) }))

/**
 * A subscriber whose deliveries are announced by a `receive {topic}` span and settled in `ack` / `nack` /
 * `dead_letter {topic}` settle spans, all continuing the message's trace. A transport dead-lettering counts in
 * `bulwark_dead_lettered_total`.
 */
export const traceSubscriber = (
  subscriber: Context.Tag.Service<Transport.Subscriber>,
  options: MessagingOptions = {}
): Context.Tag.Service<Transport.Subscriber> => ({
  features: subscriber.features,
  subscribe: (topic, subscribeOptions) => {
    const base = (operationType: string, operationName: string): Record<string, unknown> => ({
      [Attr.messagingSystem]: options.system ?? defaultSystem,
      [Attr.operationType]: operationType,
      [Attr.operationName]: operationName,
      [Attr.destination]: topic,
      ...(subscribeOptions?.group === undefined ? {} : { [Attr.consumerGroup]: subscribeOptions.group })
    })
    return Stream.mapEffect(subscriber.subscribe(topic, subscribeOptions), (delivery) =>
      Effect.gen(function*() {
        const headers = yield* messageContext(delivery.message)
        const attributes = {
          [Attr.messageId]: delivery.message.id,
          [Attr.attempt]: delivery.attempt,
          ...correlationAttributes({ id: delivery.message.id, headers })
        }
        const traced = <A, E>(operation: string, effect: Effect.Effect<A, E>, extra: Record<string, unknown> = {}) =>
          effect.pipe(
            withSafeSpan(`${operation} ${topic}`, {
              kind: operation === "receive" ? "consumer" : "client",
              attributes: { ...base(operation === "receive" ? "receive" : "settle", operation), ...attributes, ...extra }
            }),
            Propagation.withRemoteParent(headers)
          )
        yield* traced("receive", Effect.void)
        const traced_: Delivery.Delivery = {
          message: delivery.message,
          attempt: delivery.attempt,
          ack: traced("ack", delivery.ack),
          nack: (nackOptions) => traced("nack", delivery.nack(nackOptions)),
          deadLetter: (reason) =>
            traced("dead_letter", delivery.deadLetter(reason), { [Attr.deadLetterCategory]: reason.category }).pipe(
              Effect.zipLeft(Metric.increment(
                Metric.tagged(Metric.tagged(Metrics.deadLettered, "destination", topic), "category", reason.category)
              ))
            )
        }
        return traced_
      }))
  }
})

/** Decorates the `Transport.Subscriber` in context with {@link traceSubscriber}. */
export const layerSubscriber = (options: MessagingOptions = {}): Layer.Layer<Transport.Subscriber, never, Transport.Subscriber> =>
  Layer.effect(Transport.Subscriber, Effect.map(Transport.Subscriber, (subscriber) => traceSubscriber(subscriber, options)))

// --- outbox --------------------------------------------------------------------------------------------------

/**
 * An outbox whose appends are `create {topic}` producer spans and whose rows carry that span's context, so the
 * relay's later publish continues the trace of the transaction that wrote them.
 */
export const traceOutbox = (outbox: Outbox.OutboxService, options: MessagingOptions = {}): Outbox.OutboxService => ({
  ...outbox,
  appendMessages: (topic, messages) =>
    Effect.gen(function*() {
      const prepared = yield* Effect.forEach(messages, prepare)
      const context = yield* Propagation.currentHeaders
      const stamped = yield* Effect.forEach(prepared, (p) => stamp(p, context))
      return yield* outbox.appendMessages(topic, stamped)
    }).pipe(
      withSafeSpan(`create ${topic}`, {
        kind: "producer",
        attributes: {
          [Attr.messagingSystem]: options.system ?? defaultSystem,
          [Attr.operationType]: "create",
          [Attr.operationName]: "outbox.append",
          [Attr.destination]: topic,
          ...(messages.length === 1
            ? { [Attr.messageId]: messages[0]!.id }
            : { [Attr.batchCount]: messages.length })
        }
      })
    )
})

/**
 * Decorates the `Outbox` in context with {@link traceOutbox}. The relay's `OutboxStore` passes through
 * unchanged, so `layerOutbox().pipe(Layer.provide(Outbox.layer()))` still gives the relay its store.
 */
export const layerOutbox = (
  options: MessagingOptions = {}
): Layer.Layer<Outbox.Outbox | OutboxStore.OutboxStore, never, Outbox.Outbox | OutboxStore.OutboxStore> =>
  Layer.effectContext(Effect.map(Effect.context<Outbox.Outbox | OutboxStore.OutboxStore>(), (context) =>
    Context.add(context, Outbox.Outbox, traceOutbox(Context.get(context, Outbox.Outbox), options))))

// --- idempotency ---------------------------------------------------------------------------------------------

const claimOutcome = (claim: IdempotencyStore.Claim) =>
  claim._tag === "Fresh" ? "fresh" : claim._tag === "InProgress" ? "in_progress" : "completed"

/**
 * An idempotency store whose claims are `idempotency.claim` spans with the outcome (`fresh`, `in_progress`,
 * `completed`) and `bulwark.idempotency.hit`; a completed claim counts as a suppressed duplicate. Keys are not
 * recorded: they may be business keys.
 */
export const traceIdempotencyStore = (store: IdempotencyStore.Service): IdempotencyStore.Service => ({
  ...store,
  claim: (key, claimOptions) =>
    store.claim(key, claimOptions).pipe(
      Effect.tap((claim) =>
        Effect.zipRight(
          Effect.annotateCurrentSpan({
            [Attr.idempotencyOutcome]: claimOutcome(claim),
            [Attr.idempotencyHit]: claim._tag !== "Fresh"
          }),
          claim._tag === "Completed" ? Metric.increment(Metrics.duplicatesSuppressed) : Effect.void
        )
      ),
      withSafeSpan("idempotency.claim", { kind: "internal" })
    )
})

/** Decorates the `IdempotencyStore` in context with {@link traceIdempotencyStore}. */
export const layerIdempotencyStore: Layer.Layer<IdempotencyStore.IdempotencyStore, never, IdempotencyStore.IdempotencyStore> =
  Layer.effect(IdempotencyStore.IdempotencyStore, Effect.map(IdempotencyStore.IdempotencyStore, traceIdempotencyStore))

// --- dead-letter store ---------------------------------------------------------------------------------------

// A gauge that cannot be read is stale, not fatal: the store operation itself succeeded.
const refreshDepth = (store: DeadLetterStore.Service) =>
  store.depth.pipe(
    Effect.flatMap((depth) => Metric.set(Metrics.dlqDepth, depth)),
    Effect.catchAll((error) => Effect.logWarning("dead-letter depth could not be read for the gauge", error))
  )

/**
 * A dead-letter store whose `add` is a `dead_letter {topic}` span (continuing the message's trace when no span
 * is around, as when draining a `.dlq` topic) that counts the message; every add, replay and purge refreshes
 * `bulwark_dlq_depth`.
 */
export const traceDeadLetterStore = (store: DeadLetterStore.Service, options: MessagingOptions = {}): DeadLetterStore.Service => ({
  ...store,
  markReplayed: (id) => Effect.tap(store.markReplayed(id), () => refreshDepth(store)),
  purge: (before) => Effect.tap(store.purge(before), () => refreshDepth(store)),
  add: (entry) =>
    Effect.gen(function*() {
      const ambient = yield* Effect.option(Effect.currentParentSpan)
      const added = store.add(entry).pipe(
        Effect.tap(() =>
          Metric.increment(
            Metric.tagged(Metric.tagged(Metrics.deadLettered, "destination", entry.message.topic), "category", entry.category)
          )
        ),
        Effect.tap(() => refreshDepth(store)),
        withSafeSpan(`dead_letter ${entry.message.topic}`, {
          kind: "producer",
          attributes: {
            [Attr.messagingSystem]: options.system ?? defaultSystem,
            [Attr.operationType]: "send",
            [Attr.operationName]: "dead_letter",
            [Attr.destination]: entry.message.topic,
            [Attr.messageId]: entry.message.id,
            [Attr.deadLetterCategory]: entry.category,
            [Attr.attempt]: entry.attempts,
            ...correlationAttributes({ id: entry.message.id, headers: entry.message.headers })
          }
        })
      )
      return yield* Option.isSome(ambient) ? added : Propagation.withRemoteParent(entry.message.headers)(added)
    })
})

/** Decorates the `DeadLetterStore` in context with {@link traceDeadLetterStore}. */
export const layerDeadLetterStore = (
  options: MessagingOptions = {}
): Layer.Layer<DeadLetterStore.DeadLetterStore, never, DeadLetterStore.DeadLetterStore> =>
  Layer.effect(DeadLetterStore.DeadLetterStore, Effect.map(DeadLetterStore.DeadLetterStore, (store) => traceDeadLetterStore(store, options)))

/** Reads the store's depth into `bulwark_dlq_depth` (run it on a schedule, e.g. next to the relay's metrics). */
export const updateDlqDepth: Effect.Effect<void, DeadLetterStore.DeadLetterStoreError, DeadLetterStore.DeadLetterStore> =
  Effect.flatMap(DeadLetterStore.DeadLetterStore, (store) => Effect.flatMap(store.depth, (depth) => Metric.set(Metrics.dlqDepth, depth)))

// --- circuit breaker -----------------------------------------------------------------------------------------

/**
 * A breaker whose calls record its state on the current span (`bulwark.breaker.state`) and a
 * `bulwark.breaker.state_change` span event when a call changed it (`bulwark.breaker.rejected` when refused).
 */
export const traceBreaker = <ES>(breaker: Breaker.Breaker<ES>): Breaker.Breaker<ES> => ({
  ...breaker,
  execute: (self) =>
    Effect.gen(function*() {
      const before = yield* breaker.state
      const exit = yield* Effect.exit(breaker.execute(self))
      const after = yield* breaker.state
      yield* Effect.annotateCurrentSpan({ [Attr.breakerKey]: breaker.key, [Attr.breakerState]: after })
      if (after !== before) {
        yield* spanEvent("bulwark.breaker.state_change", { [Attr.breakerKey]: breaker.key, from: before, to: after })
      }
      const refused = Exit.isFailure(exit) &&
        Option.exists(Cause.failureOption(exit.cause), (error) => errorTypeOf(error) === "BreakerOpen")
      if (refused) {
        yield* spanEvent("bulwark.breaker.rejected", { [Attr.breakerKey]: breaker.key, [Attr.breakerState]: after })
      }
      return yield* exit
    })
})

// --- webhook -------------------------------------------------------------------------------------------------

/**
 * A verifier whose checks are `webhook.verify` spans. The synchronous `verifyAt` path is dropped so every check
 * is observed; signatures, secrets and header values are never recorded, a refusal only by its type.
 */
export const traceVerifier = (verifier: Verifier.Verifier): Verifier.Verifier => ({
  scheme: verifier.scheme,
  source: verifier.source,
  verify: (request) =>
    verifier.verify(request).pipe(
      withSafeSpan("webhook.verify", {
        kind: "internal",
        attributes: { [Attr.webhookSource]: verifier.source, [Attr.webhookScheme]: verifier.scheme }
      })
    )
})

/**
 * `Ingress.process` in a `webhook.receive {source}` server span, with the verify span inside and the publish
 * span (from {@link layerPublisher}) below it. A `traceparent` the sender sent is linked, not continued: the
 * sender is outside the system and its trace is not ours to extend.
 */
export const ingress = <A, I>(options: Ingress.Options<A, I>) => {
  const process = Ingress.process({ ...options, verifier: traceVerifier(options.verifier) })
  const received = Metric.tagged(Metric.tagged(Metrics.eventsReceived, "stage", "webhook"), "destination", options.topic)
  return (request: Verifier.Request) => {
    const header = request.headers as Readonly<Record<string, string | ReadonlyArray<string> | undefined>>
    const traceparent = header[Envelope.HeaderNames.traceparent]
    const links = Option.toArray(
      Propagation.linkTo(typeof traceparent === "string" ? { [Envelope.HeaderNames.traceparent]: traceparent } : {})
    )
    return process(request).pipe(
      Effect.tap((accepted) =>
        Effect.zipRight(
          Effect.annotateCurrentSpan({
            [Attr.messageId]: accepted.id,
            [Attr.conversationId]: accepted.id,
            [Attr.correlationId]: accepted.id,
            [Attr.webhookDuplicate]: accepted.duplicate
          }),
          accepted.duplicate ? Metric.increment(Metrics.duplicatesSuppressed) : Metric.increment(received)
        )
      ),
      withSafeSpan(`webhook.receive ${options.verifier.source}`, {
        kind: "server",
        links,
        attributes: {
          [Attr.webhookSource]: options.verifier.source,
          [Attr.webhookScheme]: options.verifier.scheme,
          [Attr.destination]: options.topic,
          [Attr.bodySize]: request.body.length
        }
      })
    )
  }
}
