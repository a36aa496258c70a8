/**
 * The transactional outbox: events are written as rows in the same database transaction as the state
 * change that caused them, so both commit or neither does. A {@link Relay} publishes the rows afterwards.
 *
 * Rows hold the topic, the message id, the key (the envelope's subject, which orders delivery), the
 * CloudEvents payload, the headers (W3C trace context included), the creation time, the publish attempts
 * and the state: `pending` → `published` (deleted after the retention period) or `dead` (kept, with the
 * last error as a `Failure.FailureRecord`).
 *
 * The outbox runs over an `OutboxStore` driver: SQL (`make`/`layer` here, or `SqlOutboxStore`) or memory
 * (`MemoryOutboxStore.layer()`, whose `transaction` plays the part of `sql.withTransaction`).
 */
import { Envelope, SchemaUse, Telemetry, TraceContext } from "@bulwark/core"
import { type Database, Migrations } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Context, Duration, Effect, FiberRef, Layer, Metric, Option, type Schema, type Tracer } from "effect"
import * as SqlOutboxStore from "./OutboxStore/Sql.js"
import * as Store from "./OutboxStore.js"

/** `append` was called outside a transaction: nothing was written, since the write would not be atomic with the caller's. */
export const OutsideTransaction = Store.OutsideTransaction
/** `append` was called outside a transaction: nothing was written, since the write would not be atomic with the caller's. */
export type OutsideTransaction = Store.OutsideTransaction

/** The outbox store failed (a database error, as its `cause`). Transient. */
export const OutboxStoreError = Store.OutboxStoreError
/** The outbox store failed (a database error, as its `cause`). Transient. */
export type OutboxStoreError = Store.OutboxStoreError

/** The table name is not a plain lower-case SQL identifier. */
export const InvalidTableName = Migrations.InvalidTableName
/** The table name is not a plain lower-case SQL identifier. */
export type InvalidTableName = Migrations.InvalidTableName

/** A row that failed for good, as `deadLetters` reads it. */
export type DeadRow = Store.DeadRow

/** Settings of the SQL outbox tables (see `OutboxStore/Sql.ts`). */
export type Options = SqlOutboxStore.Options

/** The default outbox table. */
export const defaultTable = SqlOutboxStore.defaultTable

/** The outbox as its users see it, over any {@link Store.OutboxStore} driver: the port's user side. */
export interface OutboxService extends Pick<Store.Service, "appendMessages" | "backlog" | "lag" | "drained" | "deadLetters"> {}

/** The outbox service (what `append` writes through; tracing decorates it). */
export class Outbox extends Context.Tag("@bulwark/outbox/Outbox")<Outbox, OutboxService>() {}

/** Backlog gauge (pending rows), updated by the relay. */
export const backlogGauge = Metric.gauge("bulwark_outbox_backlog", { description: "outbox rows not yet published" })
/** Lag gauge (age of the oldest pending row in ms), updated by the relay. */
export const lagGauge = Metric.gauge("bulwark_outbox_lag_ms", { description: "age of the oldest unpublished outbox row" })

/**
 * Creates the SQL outbox tables (migrations) and the store: the one value serves both as the {@link Outbox}
 * and as the relay's `OutboxStore`.
 */
export const make = (
  options: Options = {}
): Effect.Effect<SqlOutboxStore.SqlOutboxStore, SqlError | InvalidTableName, SqlClient.SqlClient | Database.Database> =>
  SqlOutboxStore.make(options)

/**
 * Drops an outbox's tables and forgets their migrations, for tests and throw-away runs; a later `make` over
 * the same name starts afresh.
 */
export const drop: (table?: string) => Effect.Effect<void, SqlError | InvalidTableName, SqlClient.SqlClient> =
  SqlOutboxStore.drop

/** The `create {topic}` span's attributes: the message's id and correlation for one message, the count for a batch. */
const appendAttributes = (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) => ({
  ...Telemetry.messagingAttributes({ operationType: "create", operationName: "outbox.append", destination: topic }),
  ...(messages.length === 1
    ? { [Telemetry.Attr.messageId]: messages[0]!.id, ...Telemetry.correlationAttributes(messages[0]!) }
    : { [Telemetry.Attr.batchCount]: messages.length })
})

/**
 * The rows as written under `span`: each carries the span's W3C context, except a row carrying another
 * trace's context (a forwarded message), which keeps it.
 */
const stampAll = TraceContext.stampAll

const noLinks: ReadonlyArray<Tracer.SpanLink> = []
const noStackTrace = { captureStackTrace: false } as const
// The start time of a span no tracer sees: it is never read.
const untimed = BigInt(0)

/**
 * An append as a `create {topic}` producer span inside the caller's span, each row's headers carrying that
 * span's W3C context, so the relay's later publish, and its consumer, continue the trace of the transaction
 * that wrote the row however much later they run. Outside any span, a lone message's carried context is the
 * parent; a row carrying another trace's context (a forwarded message) keeps it, and the span links to it.
 *
 * An append is one per business transaction, so the span is started and ended directly
 * (`Telemetry.unsafeStartSpan`) rather than through `Effect.withSpan`'s steps, whenever the fiber allows it
 * (`Telemetry.immediate`: tracing enabled, no span annotations or links set around it); otherwise it is made
 * by `Telemetry.withSafeSpan`. Both make the same span. While no tracer is installed (and tracing is enabled) the
 * span only gives the rows their W3C context: it gets no attributes, links or timestamps and is not ended, and
 * the store does not run under it.
 */
export const traceAppend = (
  appendMessages: Store.Service["appendMessages"]
): Store.Service["appendMessages"] =>
(topic, messages) =>
  Effect.withFiberRuntime((fiber) => {
    const carried = messages.map((message) => TraceContext.extract(message.headers))
    const lone = carried.length === 1 ? Option.getOrUndefined(carried[0]!) : undefined
    const ambient = Telemetry.propagated(fiber.currentSpan)
    const parent = ambient ?? lone
    if (Telemetry.isNativeTracer(fiber.currentTracer) && fiber.getFiberRef(FiberRef.currentTracerEnabled)) {
      // No tracer installed: the span is made only for the W3C context the rows carry (the relay's publish
      // and its consumer continue that trace, and an upstream trace id passes through). Its attributes,
      // links, timing and end, and the store running under it, are for a tracer that records; there is none
      // here. Read straight off the fiber: the `Telemetry.immediate` environment costs a snapshot of the
      // fiber's refs (a copy of them) per append, which only a recorded span needs.
      const span = fiber.currentTracer.span(
        `create ${topic}`,
        parent === undefined ? Option.none() : Option.some(parent),
        Context.empty(),
        noLinks,
        untimed,
        "producer",
        noStackTrace
      )
      return appendMessages(topic, stampAll(messages, carried, span))
    }
    const env = Telemetry.immediate(fiber.currentContext, fiber.getFiberRefs())
    const links = carried.flatMap((span, i) =>
      Option.isSome(span) && span.value.traceId !== parent?.traceId
        ? [{ _tag: "SpanLink" as const, span: span.value, attributes: { [Telemetry.Attr.messageId]: messages[i]!.id } }]
        : []
    )
    const options: Tracer.SpanOptions = { kind: "producer", links, attributes: appendAttributes(topic, messages) }
    if (env !== undefined) {
      const span = Telemetry.unsafeStartSpan(env, `create ${topic}`, options, Telemetry.immediateTime(env), parent)
      return appendMessages(topic, stampAll(messages, carried, span)).pipe(
        Effect.withParentSpan(span),
        Effect.onExit((exit) => Effect.sync(() => Telemetry.unsafeEndSpanExit(env, span, exit)))
      )
    }
    return Effect.flatMap(Telemetry.currentSpan, (span) =>
      appendMessages(topic, span === undefined ? messages : stampAll(messages, carried, span))).pipe(
        Telemetry.withSafeSpan(`create ${topic}`, parent === undefined ? options : { ...options, parent })
      )
  })

/** The {@link Outbox} over a store: the store's own append (traced), backlog, lag, drained and dead letters. */
export const fromStore = (store: Store.Service): OutboxService => ({
  appendMessages: traceAppend(store.appendMessages),
  backlog: store.backlog,
  lag: store.lag,
  drained: store.drained,
  deadLetters: store.deadLetters
})

/** Provides the {@link Outbox} and the relay's `OutboxStore` over the database in context, creating the tables. */
export const layer = (
  options: Options = {}
): Layer.Layer<Outbox | Store.OutboxStore, SqlError | InvalidTableName, SqlClient.SqlClient | Database.Database> =>
  Layer.effectContext(Effect.map(make(options), (store) =>
    Context.make(Store.OutboxStore, store).pipe(Context.add(Outbox, fromStore(store)))))

/** Provides the {@link Outbox} over the `OutboxStore` in context (any driver). */
export const layerFromStore: Layer.Layer<Outbox, never, Store.OutboxStore> = Layer.effect(
  Outbox,
  Effect.map(Store.OutboxStore, fromStore)
)

/** Appends raw messages to the outbox in the caller's current transaction. */
export const appendMessages = (
  topic: string,
  messages: ReadonlyArray<Transport.OutgoingMessage>
): Effect.Effect<void, OutsideTransaction | OutboxStoreError, Outbox> =>
  Effect.flatMap(Outbox, (outbox) => outbox.appendMessages(topic, messages))

/**
 * Appends envelopes (encoded as CloudEvents, keyed by subject, with their headers) in the caller's current
 * transaction; outside one it fails with {@link OutsideTransaction} and writes nothing.
 */
export const append = <A, I, R>(dataSchema: Schema.Schema<A, I, R>) => {
  const encode = Envelope.encode(dataSchema)
  return (
    topic: string,
    envelopes: ReadonlyArray<Envelope.Envelope<A>>
  ): Effect.Effect<void, OutsideTransaction | OutboxStoreError | Envelope.EnvelopeEncodeError, R | Outbox> =>
    SchemaUse.reported(
      // One event per transaction is the common case: encoded and appended without the loop over the batch.
      envelopes.length === 1
        ? Effect.flatMap(encode(envelopes[0]!), (payload) => appendMessages(topic, [messageOf(envelopes[0]!, payload)]))
        : Effect.flatMap(
          Effect.forEach(envelopes, (envelope) => Effect.map(encode(envelope), (payload) => messageOf(envelope, payload))),
          (messages) => appendMessages(topic, messages)
        ),
      () => Transport.producedUses(topic, dataSchema, envelopes)
    )
}

/** The outbox row of an envelope whose CloudEvents payload is encoded: keyed by its subject, with its headers. */
const messageOf = (envelope: Envelope.Envelope<unknown>, payload: Uint8Array): Transport.OutgoingMessage => ({
  id: envelope.id,
  key: envelope.subject,
  payload,
  headers: envelope.headers
})

/** Rows not yet published. */
export const backlog: Effect.Effect<number, OutboxStoreError, Outbox> = Effect.flatMap(Outbox, (o) => o.backlog)

/** Age of the oldest unpublished row (zero when none). */
export const lag: Effect.Effect<Duration.Duration, OutboxStoreError, Outbox> = Effect.flatMap(Outbox, (o) => o.lag)

/** Waits until everything committed to the outbox before the call is published (or dead). */
export const drained: Effect.Effect<void, OutboxStoreError, Outbox> = Effect.flatMap(Outbox, (o) => o.drained)

/** The dead rows, oldest first. */
export const deadLetters = (limit?: number): Effect.Effect<ReadonlyArray<DeadRow>, OutboxStoreError, Outbox> =>
  Effect.flatMap(Outbox, (o) => o.deadLetters(limit))

/** Reads backlog and lag and sets {@link backlogGauge} and {@link lagGauge}. */
export const updateMetrics: Effect.Effect<void, OutboxStoreError, Outbox> = Effect.gen(function*() {
  const outbox = yield* Outbox
  const count = yield* outbox.backlog
  const age = yield* outbox.lag
  yield* Metric.set(backlogGauge, count)
  yield* Metric.set(lagGauge, Duration.toMillis(age))
})
