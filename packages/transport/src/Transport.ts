/**
 * The transport ports: `Publisher` and `Subscriber`.
 *
 * Semantics every driver promises (and the contract suite checks):
 * - **at least once**: a published message is delivered until it is acked or dead-lettered; a crashed
 *   consumer's unsettled deliveries come back after the driver's visibility timeout;
 * - **competing consumers**: subscribers of one group share the work; each group sees every message
 *   (where the driver supports groups);
 * - **per-key order** only where `features.orderedPerKey` says so.
 */
import { AuditLog, Delivery, Envelope, Failure, Handler, Pipeline, SchemaUse, Supervise, Telemetry, TraceContext } from "@bulwark/core"
import { Clock, Context, Data, Duration, Effect, Exit, Metric, MetricLabel, Option, Schema, Stream, type Tracer } from "effect"

/** A message to publish. `key` is the ordering key (an envelope's subject). */
export interface OutgoingMessage {
  readonly id: string
  readonly key: string
  readonly payload: Uint8Array
  readonly headers: Readonly<Record<string, string>>
}

/** What a driver can and cannot do; the contract suite tests what is declared. */
export interface Features {
  /** A key's next message is not delivered while a previous one is unsettled. */
  readonly orderedPerKey: boolean
  /** `nack({ delay })` postpones redelivery by the delay. */
  readonly delayedNack: boolean
  /** Unsettled deliveries of a dead consumer return after this long. */
  readonly visibilityTimeout: Duration.Duration
  /** `deadLetter` moves the message to `Delivery.deadLetterTopic(topic)` with the reason in its headers. */
  readonly deadLetterTopic: boolean
  /** Subscribers with different group names each receive every message. */
  readonly consumerGroups: boolean
  /** Messages survive a restart of the process (and of the broker where it persists). */
  readonly persistent: boolean
  /** Publishing the same id twice within this window delivers once. */
  readonly dedupeWindow?: Duration.Duration
}

// A driver's own classified error (a permanent "message too large", say) keeps its verdict; anything else a
// broker or client throws is taken as a passing dependency fault, which is what a lost connection is.
const causeVerdict = (cause: unknown): Failure.Verdict =>
  Failure.isClassified(cause) ? cause[Failure.ClassifiedTypeId] : Failure.verdict("transient", "dependency")

/** Publishing failed; nothing is known to be published. Classified as its cause when that is classified, else transient `dependency`. */
export class PublishError extends Data.TaggedError("PublishError")<{
  readonly topic: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return causeVerdict(this.cause)
  }
  override get message(): string {
    return `publish to ${this.topic} failed: ${String(this.cause)}`
  }
}

/** A subscription could not start or broke. Classified as its cause when that is classified, else transient `dependency`. */
export class SubscribeError extends Data.TaggedError("SubscribeError")<{
  readonly topic: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return causeVerdict(this.cause)
  }
  override get message(): string {
    return `subscription to ${this.topic} failed: ${String(this.cause)}`
  }
}

/** Options of a subscription. */
export interface SubscribeOptions {
  /** Competing consumers share a group's work. Default `"default"`. */
  readonly group?: string
}

/** Options of one publish. */
export interface PublishOptions {
  /**
   * Fail (a `PublishError` whose cause is a {@link DuplicateMessage}) instead of succeeding when the broker
   * recognises a message id as already published and does not store it again (NATS JetStream's duplicate
   * window), for publishers that must know each message went out now: dead-letter replay. The default
   * (false) suits the outbox relay, whose republish after a crash is meant to be dropped. Drivers without
   * broker-side dedupe have nothing to reject.
   */
  readonly rejectDuplicates?: boolean
}

/** The broker dropped a message as a duplicate of one it already holds (see {@link PublishOptions}). */
export class DuplicateMessage extends Data.TaggedError("DuplicateMessage")<{
  readonly id: string
}> {
  override get message(): string {
    return `message ${this.id} was dropped by the broker as a duplicate of one already published`
  }
}

/** Publishes messages to topics. */
export class Publisher extends Context.Tag("@bulwark/transport/Publisher")<Publisher, {
  /**
   * Publishes all messages or fails; on success the broker has accepted and confirmed them durably (as
   * durable as it is). A message the broker did not confirm is a failure, never a success.
   */
  readonly publish: (
    topic: string,
    messages: ReadonlyArray<OutgoingMessage>,
    options?: PublishOptions
  ) => Effect.Effect<void, PublishError>
  /**
   * Publishes at once when the driver can confirm without waiting (an in-process broker with room), with the
   * same span, trace headers and metrics as `publish`; `false`, having done nothing, when it cannot (then use
   * `publish`). Absent on drivers that always wait for a broker.
   */
  readonly publishNow?: (topic: string, messages: ReadonlyArray<OutgoingMessage>, env: Telemetry.Immediate) => boolean
}>() {}

/** Subscribes to topics as a stream of deliveries. */
export class Subscriber extends Context.Tag("@bulwark/transport/Subscriber")<Subscriber, {
  readonly features: Features
  /** `messaging.system` of the driver (`nats`, `rabbitmq`, …), for the consumers' spans. */
  readonly system?: string
  /** Deliveries of `topic` for the group; interrupting the stream leaves unsettled deliveries to the visibility timeout. */
  readonly subscribe: (topic: string, options?: SubscribeOptions) => Stream.Stream<Delivery.Delivery, SubscribeError>
}>() {}

/** What every driver provides: both ports' operations and the features it declares. */
export interface Driver {
  readonly features: Features
  readonly publish: Context.Tag.Service<Publisher>["publish"]
  readonly subscribe: Context.Tag.Service<Subscriber>["subscribe"]
  /**
   * For drivers that can accept messages synchronously: the function that stores them now, or `undefined`
   * when the topic cannot take them without waiting. Asking must have no effect.
   */
  readonly storeNow?: (topic: string) => ((messages: ReadonlyArray<OutgoingMessage>) => void) | undefined
}

/** What {@link instrument} needs to know about a driver. */
export interface InstrumentOptions {
  /** `messaging.system`: `rabbitmq`, `nats`, `redis`, `postgresql`, `memory`, … */
  readonly system: string
}

const publishMetrics = (topic: string) => {
  const duration = Metric.tagged(Telemetry.publishDuration, "destination", topic)
  return {
    success: Metric.tagged(duration, "outcome", "success"),
    failure: Metric.tagged(duration, "outcome", "failure"),
    // The labels of `success`, for updates made without a fiber (`Telemetry.unsafeUpdate`).
    successLabels: [MetricLabel.make("destination", topic), MetricLabel.make("outcome", "success")]
  }
}

/**
 * A driver's `publish` with a `send {topic}` producer span per call, the span's W3C context written into the
 * transport headers of each message that carries no context of another trace, and `bulwark_publish_duration_seconds`.
 *
 * Parent: the span around the call; with none, a lone message's carried context (so an outbox relay's publish
 * joins the trace of the append). A message carrying another trace's context (a relay batch, a replay) is
 * forwarded untouched, so its consumer continues that trace, and the `send` span links to it. Payloads are
 * never decoded or re-encoded: the context travels in the transport headers.
 */
export const tracePublish = (
  publish: Context.Tag.Service<Publisher>["publish"],
  options: InstrumentOptions
): Context.Tag.Service<Publisher>["publish"] => {
  const metrics = new Map<string, ReturnType<typeof publishMetrics>>()
  const metricsOf = (topic: string) => {
    let found = metrics.get(topic)
    if (found === undefined) {
      found = publishMetrics(topic)
      metrics.set(topic, found)
    }
    return found
  }
  return (topic, messages) =>
    Effect.flatMap(Telemetry.currentSpan, (ambient) => {
      const { carried, parent, links, attributes, category } = sendPlan(topic, messages, ambient, options)
      const send = Effect.flatMap(Telemetry.currentSpan, (span) => {
        // No span (the tracer disabled): the messages go as they are.
        if (span === undefined) return publish(topic, messages)
        return publish(topic, stampAll(messages, carried, span))
      })
      const { failure, success } = metricsOf(topic)
      const audited = Effect.zipLeft(send, AuditLog.record(() => publishedEntries(topic, messages, options.system)))
      // A dead-letter copy published by hand (the outbox relay's dead rows) is where that message was
      // dead-lettered: counted here, once; a transport's own dead-lettering is counted by the pipeline.
      const counted = category === undefined ? audited : Effect.zipLeft(
        audited,
        Metric.incrementBy(
          Metric.tagged(
            Metric.tagged(Telemetry.deadLettered, "destination", messages[0]!.headers[Delivery.DeadLetterHeaders.originTopic] ?? topic),
            "category",
            category
          ),
          messages.length
        )
      )
      return Effect.flatMap(Clock.currentTimeMillis, (start) =>
        counted.pipe(
          Telemetry.withSafeSpan(`send ${topic}`, {
            kind: "producer",
            links,
            attributes,
            ...(parent === undefined ? { root: true } : { parent })
          }),
          Effect.onExit((exit) =>
            Effect.flatMap(Clock.currentTimeMillis, (end) =>
              Metric.update(Exit.isSuccess(exit) ? success : failure, (end - start) / 1000))
          )
        ))
    })
}

// One `published` audit entry per message, written after the broker accepted the batch.
const publishedEntries = (
  topic: string,
  messages: ReadonlyArray<OutgoingMessage>,
  system: string
): ReadonlyArray<AuditLog.EntryInput> =>
  messages.map((message) => ({
    eventId: message.id,
    stage: "published" as const,
    component: "transport",
    topic,
    outcome: "accepted",
    ...AuditLog.causationOf(message.headers),
    detail: { system },
    // Kept only where the driver's settings allow (for replay from history); otherwise dropped unread.
    message: { key: message.key, payload: message.payload, headers: message.headers }
  }))

// What a `send` span is made of, shared by the effect and the immediate path.
const sendPlan = (
  topic: string,
  messages: ReadonlyArray<OutgoingMessage>,
  ambient: Tracer.AnySpan | undefined,
  options: InstrumentOptions
) => {
  const carried = messages.map((message) => TraceContext.extract(message.headers))
  const parent: Tracer.AnySpan | undefined = ambient ?? (carried.length === 1 ? Option.getOrUndefined(carried[0]!) : undefined)
  const links: Array<Tracer.SpanLink> = []
  for (let i = 0; i < carried.length; i++) {
    const span = carried[i]!
    if (Option.isSome(span) && span.value.traceId !== parent?.traceId) {
      links.push({ _tag: "SpanLink", span: span.value, attributes: { [Telemetry.Attr.messageId]: messages[i]!.id } })
    }
  }
  const attributes = Telemetry.messagingAttributes({
    system: options.system,
    operationType: "send",
    operationName: "send",
    destination: topic
  })
  if (messages.length === 1) {
    const message = messages[0]!
    attributes[Telemetry.Attr.messageId] = message.id
    attributes[Telemetry.Attr.bodySize] = message.payload.length
    Object.assign(attributes, Telemetry.correlationAttributes(message))
  } else attributes[Telemetry.Attr.batchCount] = messages.length
  const category = messages[0]?.headers[Delivery.DeadLetterHeaders.category]
  if (category !== undefined) attributes[Telemetry.Attr.deadLetterCategory] = category
  return { carried, parent, links, attributes, category }
}

// The part of a send plan that shows when spans are unseen: the trace the messages are stamped with.
const unseenSendPlan = (messages: ReadonlyArray<OutgoingMessage>, ambient: Tracer.AnySpan | undefined) => {
  const carried = messages.map((message) => TraceContext.extract(message.headers))
  const parent: Tracer.AnySpan | undefined = ambient ?? (carried.length === 1 ? Option.getOrUndefined(carried[0]!) : undefined)
  const category = messages[0]?.headers[Delivery.DeadLetterHeaders.category]
  return { carried, parent, links: noLinks, attributes: undefined, category }
}
const noLinks: ReadonlyArray<Tracer.SpanLink> = []

// The messages with the send span's context, except those carrying another trace's (forwarded untouched).
const stampAll = TraceContext.stampAll

/**
 * {@link tracePublish} for a driver's `storeNow`: the same `send` span (a child of the environment's span),
 * trace headers and duration metric, made synchronously. `false`, with nothing done, when the driver cannot take
 * the messages now, or when the publish must be audited or is a dead-letter copy (those take the effect path).
 */
export const tracePublishNow = (
  storeNow: NonNullable<Driver["storeNow"]>,
  options: InstrumentOptions
): NonNullable<Context.Tag.Service<Publisher>["publishNow"]> => {
  const metrics = new Map<string, ReturnType<typeof publishMetrics>>()
  return (topic, messages, env) => {
    if (Option.isSome(Context.getOption(env.context, AuditLog.AuditLog))) return false
    if (messages.length === 0) return false
    const store = storeNow(topic)
    if (store === undefined) return false
    // With no tracer installed the span's links and attributes are read by nothing: only its trace is stamped.
    const { carried, parent, links, attributes, category } = Telemetry.spansUnseen(env)
      ? unseenSendPlan(messages, env.parent)
      : sendPlan(topic, messages, env.parent, options)
    if (category !== undefined) {
      return false
    }
    const start = env.clock.unsafeCurrentTimeMillis()
    const span = Telemetry.unsafeStartSpan(
      env,
      `send ${topic}`,
      // `captureStackTrace` given, so the options are not copied to add it (this runs per message on hot paths).
      parent === undefined
        ? { kind: "producer", links, attributes, root: true, captureStackTrace: false }
        : { kind: "producer", links, attributes, parent, captureStackTrace: false },
      Telemetry.immediateTime(env),
      parent
    )
    store(stampAll(messages, carried, span))
    Telemetry.unsafeEndSpan(env, span, undefined)
    let found = metrics.get(topic)
    if (found === undefined) {
      found = publishMetrics(topic)
      metrics.set(topic, found)
    }
    Telemetry.unsafeUpdate(env, Telemetry.publishDuration, found.successLabels, (env.clock.unsafeCurrentTimeMillis() - start) / 1000)
    return true
  }
}

/**
 * A driver with Bulwark's instrumentation: {@link tracePublish} on `publish`, and its `messaging.system` for
 * the consumers' `process` spans. Every driver's layer provides its ports through this.
 */
export const instrument = <D extends Driver>(driver: D, options: InstrumentOptions): D & { readonly system: string } => ({
  ...driver,
  system: options.system,
  publish: tracePublish(driver.publish, options)
})

// The immediate publish of an instrumented driver, when it has one.
const publisherOf = (driver: Driver, options: InstrumentOptions): Context.Tag.Service<Publisher> => {
  const publish = tracePublish(driver.publish, options)
  return driver.storeNow === undefined ? { publish } : { publish, publishNow: tracePublishNow(driver.storeNow, options) }
}

/** The two ports of an instrumented driver, for a driver's layer. */
export const portsOf = (driver: Driver, options: InstrumentOptions): Context.Context<Publisher | Subscriber> => {
  const traced = instrument(driver, options)
  return Context.make(Publisher, publisherOf(driver, options)).pipe(
    Context.add(Subscriber, { features: traced.features, subscribe: traced.subscribe, system: traced.system })
  )
}

/** A broker URL as it may appear in errors and logs: the password, if any, is masked. */
export const redactUrl = (url: string): string => {
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") parsed.password = "***"
    return parsed.toString()
  } catch {
    return "<unparseable url>"
  }
}

/** Encodes envelopes as CloudEvents and publishes them, keyed by subject. */
export const publishEnvelopes = <A, I, R>(dataSchema: Schema.Schema<A, I, R>) => {
  const encode = Envelope.encode(dataSchema)
  return (
    topic: string,
    envelopes: ReadonlyArray<Envelope.Envelope<A>>
  ): Effect.Effect<void, PublishError | Envelope.EnvelopeEncodeError, R | Publisher> =>
    Effect.flatMap(
      Effect.forEach(envelopes, (envelope) =>
        Effect.map(encode(envelope), (payload): OutgoingMessage => ({
          id: envelope.id,
          key: envelope.subject,
          payload,
          headers: {}
        }))),
      (messages) => Effect.flatMap(Publisher, (publisher) => publisher.publish(topic, messages))
    ).pipe((publish) => SchemaUse.reported(publish, () => producedUses(topic, dataSchema, envelopes)))
}

/** The distinct (type, source) pairs of `envelopes` as produce uses of `schema` (for contract checks). */
export const producedUses = (
  topic: string,
  schema: Schema.Schema<any, any, any>,
  envelopes: ReadonlyArray<Envelope.Envelope<unknown>>
): ReadonlyArray<SchemaUse.SchemaUse> => {
  const seen = new Map<string, SchemaUse.SchemaUse>()
  for (const e of envelopes) {
    const key = `${e.type}\u0000${e.source}`
    if (!seen.has(key)) seen.set(key, { role: "produce", topic, schema, type: e.type, source: e.source })
  }
  return [...seen.values()]
}

/**
 * Subscribes to `topic` and runs `handler` over it with a {@link Pipeline} until interrupted. Supervised
 * (`Supervise`, loop `consume:<topic>:<group>`): a subscription that breaks (`SubscribeError`) is opened again
 * after a jittered, capped backoff instead of ending the consumer; it is `up` again at its next delivery.
 */
export const consume = <A, I, RS, EH, RH>(
  topic: string,
  handler: Handler.Handler<A, EH, RH>,
  options: Pipeline.Options<A, I, RS> & SubscribeOptions
) =>
  Effect.zipRight(
    SchemaUse.report(() => [{ role: "consume", topic, schema: options.schema, group: options.group ?? "default" }]),
    consumeReported(topic, handler, options)
  )

const consumeReported = <A, I, RS, EH, RH>(
  topic: string,
  handler: Handler.Handler<A, EH, RH>,
  options: Pipeline.Options<A, I, RS> & SubscribeOptions
) =>
  Effect.flatMap(Subscriber, (subscriber) =>
    Supervise.run(
      { name: `consume:${topic}:${options.group ?? "default"}`, isTransient: (error) => error instanceof SubscribeError },
      (supervisor) =>
        Pipeline.run(
          subscriber.subscribe(topic, options.group === undefined ? {} : { group: options.group }).pipe(
            Stream.tap(() => supervisor.up)
          ),
          handler,
          {
            ...options,
            ...(options.system === undefined && subscriber.system !== undefined ? { system: subscriber.system } : {}),
            ...(options.group === undefined ? {} : { group: options.group })
          }
        )
    ))
