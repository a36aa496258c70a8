/**
 * The span and metric vocabulary every Bulwark package instruments itself with: attribute names (the
 * OpenTelemetry messaging semantic conventions where one exists), span helpers that record a failure by its
 * type only, and the metrics shared by several packages.
 *
 * Packages call `Effect.withSpan` (through {@link withSafeSpan}) and `Metric` directly, so instrumentation
 * needs no exporter and no OpenTelemetry import: without a tracer installed the spans stay in Effect's own
 * tracer (valid W3C ids, nothing exported), and `@bulwark/tracing`'s `Otel` layer only decides where they go.
 *
 * Attributes are built from explicit lists (ids, types, topics, counts, outcomes); payloads, subjects, keys
 * and headers other than the trace and correlation ones are never recorded, and a failure reaches a span as
 * its type (`error.type`), never its message, since messages can quote request data.
 */
import { Array as Arr, Cause, Chunk, Clock, Context, Data, DefaultServices, Effect, Exit, FiberRef, FiberRefs, HashMap, Metric, MetricBoundaries, Option, Tracer } from "effect"
import type * as MetricLabel from "effect/MetricLabel"
import * as Envelope from "./Envelope.js"

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
  bodySize: "messaging.message.body.size",
  eventId: "cloudevents.event_id",
  eventType: "cloudevents.event_type",
  eventSource: "cloudevents.event_source",
  correlationId: "bulwark.correlation_id",
  causationId: "bulwark.causation_id",
  attempt: "bulwark.delivery.attempt",
  outcome: "bulwark.delivery.outcome",
  errorType: "error.type",
  idempotencyOutcome: "bulwark.idempotency.outcome",
  idempotencyHit: "bulwark.idempotency.hit",
  breakerKey: "bulwark.breaker.key",
  breakerState: "bulwark.breaker.state",
  rateLimiter: "bulwark.rate_limit.limiter",
  bulkhead: "bulwark.bulkhead.name",
  hedge: "bulwark.hedge.name",
  deadLetterCategory: "bulwark.dead_letter.category",
  deadLetterEntryId: "bulwark.dead_letter.entry_id",
  webhookSource: "bulwark.webhook.source",
  webhookScheme: "bulwark.webhook.scheme",
  webhookDuplicate: "bulwark.webhook.duplicate",
  httpBodySize: "http.request.body.size",
  httpMethod: "http.request.method",
  httpStatus: "http.response.status_code",
  httpResendCount: "http.request.resend_count",
  serverAddress: "server.address"
} as const

/** `messaging.system` for a driver that does not name one. */
export const defaultSystem = "bulwark"

/** The type of a failure as spans record it: its `_tag`, an `Error`'s name, or `typeof`. */
export const errorTypeOf = (error: unknown): string => {
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
 * and the caller still sees the original error. Without a tracer installed it costs one native span. No call
 * site is captured unless `captureStackTrace` says so: a stack per span costs more than the span, and its
 * `code.stacktrace` attribute would export the deployment's file paths.
 */
export const withSafeSpan = (name: string, options: Tracer.SpanOptions = {}) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  const spanOptions: Tracer.SpanOptions = options.captureStackTrace === undefined ? { ...options, captureStackTrace: false } : options
  return effect.pipe(
    Effect.tapErrorCause((cause) =>
      Option.match(Cause.failureOption(cause), {
        onNone: () => Effect.void,
        onSome: (error) => annotate({ [Attr.errorType]: errorTypeOf(error) })
      })
    ),
    Effect.mapError((error) => new SpanFailure({ original: error, type: errorTypeOf(error) })),
    Effect.withSpan(name, spanOptions),
    Effect.mapError((failure) => failure.original as E)
  )
}

/** The nearest span whose context propagates (not one made while the tracer is disabled), if any. */
export const propagated = (span: Tracer.AnySpan | undefined): Tracer.AnySpan | undefined => {
  let current = span
  while (current !== undefined && Context.get(current.context, Tracer.DisablePropagation)) {
    current = current._tag === "Span" ? Option.getOrUndefined(current.parent) : undefined
  }
  return current
}

/**
 * The current span (or external parent) whose context propagates, `undefined` outside one. Unlike
 * `Effect.currentSpan` it never fails: a failure there builds an exception (a stack) per call, which a hot
 * path outside any span (the tracer disabled, a relay round) would pay for nothing.
 */
export const currentSpan: Effect.Effect<Tracer.AnySpan | undefined> = Effect.withFiberRuntime((fiber) =>
  Effect.succeed(propagated(fiber.currentSpan))
)

/**
 * What instrumenting a step without running an effect needs, read once from a runtime or a fiber: the tracer,
 * the clock, the parent span, the metric labels in force and the services. Hot paths that can finish
 * synchronously (the webhook ingress) use it to make the same spans and metric updates the effect path
 * would, without a fiber per request.
 */
export interface Immediate {
  readonly tracer: Tracer.Tracer
  readonly clock: Clock.Clock
  /** Whether spans carry real timestamps (`Effect.withTracerTiming`). */
  readonly timing: boolean
  /** The span new spans are children of: the one in force where the environment was read. */
  readonly parent: Tracer.AnySpan | undefined
  readonly labels: ReadonlyArray<MetricLabel.MetricLabel>
  readonly context: Context.Context<never>
  readonly fiberRefs: FiberRefs.FiberRefs
}

const bigint0 = BigInt(0)

/**
 * The {@link Immediate} environment of a context and its fiber refs, or `undefined` when spans made there
 * need the effect path (the tracer disabled or not propagating, span annotations or links set around it).
 */
export const immediate = (context: Context.Context<never>, fiberRefs: FiberRefs.FiberRefs): Immediate | undefined => {
  if (!FiberRefs.getOrDefault(fiberRefs, FiberRef.currentTracerEnabled)) return undefined
  if (HashMap.size(FiberRefs.getOrDefault(fiberRefs, FiberRef.currentTracerSpanAnnotations)) > 0) return undefined
  if (Chunk.isNonEmpty(FiberRefs.getOrDefault(fiberRefs, FiberRef.currentTracerSpanLinks))) return undefined
  const parent = Option.getOrUndefined(Context.getOption(context, Tracer.ParentSpan))
  if (parent !== undefined && Context.get(parent.context, Tracer.DisablePropagation)) return undefined
  const services = FiberRefs.getOrDefault(fiberRefs, DefaultServices.currentServices)
  return {
    tracer: Context.get(services, Tracer.Tracer),
    clock: Context.get(services, Clock.Clock),
    timing: FiberRefs.getOrDefault(fiberRefs, FiberRef.currentTracerTimingEnabled),
    parent,
    labels: FiberRefs.getOrDefault(fiberRefs, FiberRef.currentMetricLabels),
    context,
    fiberRefs
  }
}

// The tracer a runtime has when none is installed: its spans are kept nowhere.
const nativeTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/** Whether `tracer` is Effect's own, the one a runtime has when no tracer is installed: its spans are kept nowhere. */
export const isNativeTracer = (tracer: Tracer.Tracer): boolean => tracer === nativeTracer

/**
 * Whether spans made in the environment reach nothing but their children: no tracer is installed (Effect's
 * own), so a span's attributes, events, links and timing are never read, only the trace it hands on. Hot paths
 * skip spans whose only child they can parent on the environment's span instead.
 */
export const spansUnseen = (env: Immediate): boolean => isNativeTracer(env.tracer)

/** The environment's clock in nanoseconds as spans record it (0 when tracer timing is off). */
export const immediateTime = (env: Immediate): bigint => env.timing ? env.clock.unsafeCurrentTimeNanos() : bigint0

/**
 * Starts a span as {@link withSafeSpan} would, at `startTime`: a child of `parent` (default: the environment's),
 * with the options' kind, links and attributes. End it with `span.end(immediateTime(env), exit)`.
 */
export const unsafeStartSpan = (
  env: Immediate,
  name: string,
  options: Tracer.SpanOptions,
  startTime: bigint,
  parent: Tracer.AnySpan | undefined = env.parent
): Tracer.Span => {
  const span = env.tracer.span(
    name,
    parent === undefined ? Option.none() : Option.some(parent),
    options.context ?? Context.empty(),
    options.links ?? [],
    startTime,
    options.kind ?? "internal",
    // Spread only when it changes something: this runs per span on hot paths.
    options.captureStackTrace === undefined ? { ...options, captureStackTrace: false } : options
  )
  if (options.attributes !== undefined) {
    for (const key in options.attributes) span.attribute(key, options.attributes[key])
  }
  return span
}

/** Ends a span that succeeded with `value`, at the environment's clock. */
export const unsafeEndSpan = (env: Immediate, span: Tracer.Span, value: unknown): void =>
  span.end(immediateTime(env), Exit.succeed(value))

/** Ends a span with an effect's exit as {@link withSafeSpan} would: a failure reaches it as its type only. */
export const unsafeEndSpanExit = (env: Immediate, span: Tracer.Span, exit: Exit.Exit<unknown, unknown>): void => {
  if (Exit.isSuccess(exit)) return span.end(immediateTime(env), exit)
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) return span.end(immediateTime(env), exit)
  const type = errorTypeOf(failure.value)
  span.attribute(Attr.errorType, type)
  span.end(immediateTime(env), Exit.fail(new SpanFailure({ original: failure.value, type })))
}

// Per label list, per environment label list: their union, built once. A `Metric.tagged` metric builds it (and
// with it a new registry key, hashed) on every update; an unchanged array finds the registry entry cached.
const unions = new WeakMap<ReadonlyArray<MetricLabel.MetricLabel>, WeakMap<ReadonlyArray<MetricLabel.MetricLabel>, ReadonlyArray<MetricLabel.MetricLabel>>>()

/**
 * `Metric.update` without a fiber, of `metric` tagged with `labels` (innermost `Metric.tagged` first): the same
 * series the effect path updates, with the environment's metric labels, found without a key per update.
 */
export const unsafeUpdate = <In>(
  env: Immediate,
  metric: Metric.Metric<any, In, any>,
  labels: ReadonlyArray<MetricLabel.MetricLabel>,
  input: In
): void => {
  let byEnv = unions.get(labels)
  if (byEnv === undefined) {
    byEnv = new WeakMap()
    unions.set(labels, byEnv)
  }
  let all = byEnv.get(env.labels)
  if (all === undefined) {
    all = Arr.union(labels, env.labels)
    byEnv.set(env.labels, all)
  }
  metric.unsafeUpdate(input, all)
}

/** Sets attributes on the current span; nothing outside one (and no exception built to find that out). */
export const annotate = (attributes: Readonly<Record<string, unknown>>): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) => {
    const span = fiber.currentSpan
    if (span !== undefined && span._tag === "Span") {
      for (const key in attributes) span.attribute(key, attributes[key])
    }
    return Effect.void
  })

/** Adds an event to the current span, when there is one (breaker transitions, retries, settlements). */
export const spanEvent = (name: string, attributes: Record<string, unknown> = {}): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) => {
    const span = fiber.currentSpan
    return span === undefined || span._tag !== "Span"
      ? Effect.void
      : Effect.flatMap(Clock.currentTimeNanos, (now) => Effect.sync(() => span.event(name, now, attributes)))
  })

/** The correlation attributes of a message: its conversation (correlation) id and, when it has one, its cause. */
export const correlationAttributes = (
  message: { readonly id: string; readonly headers: Readonly<Record<string, string>> }
): Record<string, string> => {
  const correlation = message.headers[Envelope.HeaderNames.correlationId] ?? message.id
  const causation = message.headers[Envelope.HeaderNames.causationId]
  return causation === undefined
    ? { [Attr.conversationId]: correlation, [Attr.correlationId]: correlation }
    : { [Attr.conversationId]: correlation, [Attr.correlationId]: correlation, [Attr.causationId]: causation }
}

/** The messaging attributes of one operation on a destination. */
export const messagingAttributes = (options: {
  readonly system?: string | undefined
  readonly operationType: "send" | "create" | "receive" | "process" | "settle"
  readonly operationName: string
  readonly destination: string
  readonly group?: string | undefined
}): Record<string, unknown> => {
  const attributes: Record<string, unknown> = {
    [Attr.messagingSystem]: options.system ?? defaultSystem,
    [Attr.operationType]: options.operationType,
    [Attr.operationName]: options.operationName,
    [Attr.destination]: options.destination
  }
  if (options.group !== undefined) attributes[Attr.consumerGroup] = options.group
  return attributes
}

/** What {@link httpClientSpan} records of one outgoing HTTP request. */
export interface HttpClientRequest {
  /** `http.request.method`, also the span's name (`POST`), as the HTTP conventions name client spans. */
  readonly method: string
  /** `server.address`: the host only, never the path or query (they can carry tokens). */
  readonly serverAddress: string
  /** 1 for the first attempt; `http.request.resend_count` is `attempt - 1` when above 0. */
  readonly attempt?: number
  /** Anything else worth recording (a webhook endpoint id, a message id); keep it free of secrets. */
  readonly attributes?: Readonly<Record<string, unknown>>
}

/**
 * One outgoing HTTP request (one attempt) as a `client` span named after its method. Inside it,
 * `TraceContext.currentHeaders` is the `traceparent` to send with the request; record the answer with
 * `annotate({ [Attr.httpStatus]: status })`. A failure is recorded by its type only.
 */
export const httpClientSpan = (request: HttpClientRequest) => {
  const attributes: Record<string, unknown> = {
    [Attr.httpMethod]: request.method,
    [Attr.serverAddress]: request.serverAddress,
    ...request.attributes
  }
  if (request.attempt !== undefined && request.attempt > 1) attributes[Attr.httpResendCount] = request.attempt - 1
  return withSafeSpan(request.method, { kind: "client", attributes })
}

// --- metrics -------------------------------------------------------------------------------------------------

/**
 * Histogram boundaries in seconds for messaging latencies: sub-millisecond in-process hops up to a minute of
 * broker redelivery or a slow downstream call.
 */
export const latencyBoundaries: MetricBoundaries.MetricBoundaries = MetricBoundaries.fromIterable([
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60
])

/** Events accepted into the system: webhooks persisted and messages handed to a handler (tags `stage`, `destination`). */
export const eventsReceived = Metric.counter("bulwark_events_received_total", {
  description: "Events received, by stage (webhook, consume) and destination",
  incremental: true
})

/** Duplicates suppressed: a webhook already accepted, or an idempotency claim that found its key completed. */
export const duplicatesSuppressed = Metric.counter("bulwark_duplicates_suppressed_total", {
  description: "Deliveries and webhooks skipped because they were already processed",
  incremental: true
})

/** Redeliveries seen by consumers (deliveries with attempt > 1, tag `destination`). */
export const redeliveries = Metric.counter("bulwark_redeliveries_total", {
  description: "Deliveries that were not the first delivery of their message",
  incremental: true
})

/**
 * Messages that left the live flow for a dead-letter destination (tags `destination`, `category`): counted
 * once, where it is decided (the pipeline settling, the dead-letter middleware, the relay), not again when a
 * drain moves the copy into the store.
 */
export const deadLettered = Metric.counter("bulwark_dead_lettered_total", {
  description: "Messages dead-lettered, by destination and category",
  incremental: true
})

/** Dead-letter entries not yet replayed. */
export const dlqDepth = Metric.gauge("bulwark_dlq_depth", {
  description: "Dead-letter entries not yet replayed"
})

/** Handler duration in seconds, one observation per handled delivery (tags `destination`, `outcome`). */
export const handlerDuration = Metric.histogram(
  "bulwark_handler_duration_seconds",
  latencyBoundaries,
  "Time a handler took to settle one delivery, in seconds"
)

/** Publish duration in seconds, one observation per `publish` call (tags `destination`, `outcome`). */
export const publishDuration = Metric.histogram(
  "bulwark_publish_duration_seconds",
  latencyBoundaries,
  "Time one publish call took, in seconds"
)
