/**
 * Runs a handler over a stream of deliveries: bounded concurrency, optional ordering per subject,
 * settlement decided by the error taxonomy, and a graceful shutdown that loses nothing.
 *
 * Settlement rules, per delivery:
 * - bytes that are not a valid envelope → dead-lettered, category `schema` (the raw bytes travel with it);
 * - handler succeeded → `ack`;
 * - handler failed permanently → dead-lettered with the failure's category;
 * - handler failed transiently → `nack` with a delay (the larger of the error's retry-after hint and the
 *   redelivery backoff), until `maxAttempts` deliveries, then dead-lettered;
 * - handler interrupted by shutdown → `nack` without delay (released for another consumer).
 */
import { Cause, Clock, Deferred, Duration, Effect, Exit, FiberId, FiberSet, Metric, Option, Schema, Scope, Stream } from "effect"
import type { Delivery, Message } from "./Delivery.js"
import { DeadLetterReason } from "./Delivery.js"
import * as AuditLog from "./AuditLog.js"
import * as Envelope from "./Envelope.js"
import * as Gate from "./internal/gate.js"
import * as Failure from "./Failure.js"
import * as Observe from "./Observe.js"
import { checkOrder, type Handler, type MiddlewareOrderError } from "./Handler.js"
import * as Telemetry from "./Telemetry.js"
import * as TraceContext from "./TraceContext.js"

/** How one delivery was settled. */
export type Outcome = "acked" | "nacked" | "dead-lettered" | "released" | "settle-failed"

/** What {@link Options.onSettled} is told after each delivery. */
export interface Settled {
  readonly delivery: Delivery
  readonly outcome: Outcome
  /** Present when the handler failed or the bytes did not decode. */
  readonly verdict?: Failure.Verdict
  readonly error?: Failure.FailureRecord
}

/** Pipeline settings; every field but `schema` has a default. */
export interface Options<A, I, RS> {
  /** The payload schema the envelopes are decoded with. */
  readonly schema: Schema.Schema<A, I, RS>
  /** Deliveries handled at once. Default 16. */
  readonly concurrency?: number
  /** `"subject"`: at most one delivery in flight per subject, in arrival order. Default `"none"`. */
  readonly orderBy?: "subject" | "none"
  /** Deliveries of one message before a transient failure is dead-lettered. Default 10. */
  readonly maxAttempts?: number
  /** Delay before a transiently failed message is redelivered. Default 200 ms doubling to 30 s. */
  readonly redeliveryDelay?: (attempt: number) => Duration.Duration
  /** How long in-flight work may finish after an interrupt before it is released. Default 10 s. */
  readonly shutdownTimeout?: Duration.DurationInput
  /** Deliveries parked behind a busy subject, beyond `concurrency`. Default 4 × concurrency. */
  readonly buffer?: number
  /** Observes each settlement (metrics, progress bars, the simulator's recorder). */
  readonly onSettled?: (settled: Settled) => Effect.Effect<void>
  /** `messaging.system` on the `process` spans (the transport sets it). Default `"bulwark"`. */
  readonly system?: string
  /** `messaging.consumer.group.name` on the `process` spans (the transport sets it). */
  readonly group?: string
}

/** Counts of a finished run. */
export interface Stats {
  readonly acked: number
  readonly nacked: number
  readonly deadLettered: number
  readonly released: number
  readonly settleFailed: number
}

/** The default redelivery backoff: 200 ms, doubling, capped at 30 s. */
export const defaultRedeliveryDelay = (attempt: number): Duration.Duration =>
  Duration.millis(Math.min(30_000, 200 * 2 ** Math.max(0, attempt - 1)))

const deliveriesTotal = Metric.counter("bulwark_pipeline_deliveries_total", {
  description: "Deliveries settled by a Bulwark pipeline, by outcome",
  incremental: true
})

// Tagged once: tagging builds and hashes a new metric key, a measurable cost when paid per delivery.
const deliveriesByOutcome: Record<Outcome, Metric.Metric.Counter<number>> = {
  "acked": Metric.tagged(deliveriesTotal, "outcome", "acked"),
  "nacked": Metric.tagged(deliveriesTotal, "outcome", "nacked"),
  "dead-lettered": Metric.tagged(deliveriesTotal, "outcome", "dead-lettered"),
  "released": Metric.tagged(deliveriesTotal, "outcome", "released"),
  "settle-failed": Metric.tagged(deliveriesTotal, "outcome", "settle-failed")
}

/** The metrics and span attributes of one destination, built once: tagging hashes a new key each time. */
interface DestinationTelemetry {
  readonly spanName: string
  readonly attributes: Record<string, unknown>
  readonly received: Metric.Metric.Counter<number>
  readonly redelivered: Metric.Metric.Counter<number>
  readonly succeeded: Metric.Metric.Histogram<number>
  readonly failed: Metric.Metric.Histogram<number>
}

const destinationTelemetry = (topic: string, system: string | undefined, group: string | undefined): DestinationTelemetry => {
  const duration = Metric.tagged(Telemetry.handlerDuration, "destination", topic)
  return {
    spanName: `process ${topic}`,
    attributes: Telemetry.messagingAttributes({ system, operationType: "process", operationName: "process", destination: topic, group }),
    received: Metric.tagged(Metric.tagged(Telemetry.eventsReceived, "stage", "consume"), "destination", topic),
    redelivered: Metric.tagged(Telemetry.redeliveries, "destination", topic),
    succeeded: Metric.tagged(duration, "outcome", "success"),
    failed: Metric.tagged(duration, "outcome", "failure")
  }
}

/**
 * The context a delivery continues: the transport headers' `traceparent` (written by the publisher), else the
 * one inside the envelope (a producer that wrote only the CloudEvents extension).
 */
const carrierOf = (message: Message, envelopeHeaders: Readonly<Record<string, string>> | undefined) =>
  message.headers[TraceContext.HeaderNames.traceparent] !== undefined || envelopeHeaders === undefined ||
    envelopeHeaders[TraceContext.HeaderNames.traceparent] === undefined
    ? message.headers
    : envelopeHeaders

const deadLetteredByKey = new Map<string, Metric.Metric.Counter<number>>()
const deadLetteredMetric = (topic: string, category: string): Metric.Metric.Counter<number> => {
  const key = `${topic}\u0000${category}`
  let found = deadLetteredByKey.get(key)
  if (found === undefined) {
    found = Metric.tagged(Metric.tagged(Telemetry.deadLettered, "destination", topic), "category", category)
    deadLetteredByKey.set(key, found)
  }
  return found
}

/**
 * The admission permits. Only the loop reading the source ever waits for one, so a counter and a single
 * waiting slot do what a semaphore would, without its bookkeeping on every delivery.
 */
const admissionGate = (permits: number) => {
  let available = permits
  let waiting: Deferred.Deferred<void> | undefined
  const take: Effect.Effect<void> = Effect.suspend(() => {
    if (available > 0) {
      available--
      return Effect.void
    }
    const signal = Deferred.unsafeMake<void>(FiberId.none)
    waiting = signal
    return Effect.zipRight(Deferred.await(signal), take)
  })
  const release: Effect.Effect<void> = Effect.sync(() => {
    available++
    const signal = waiting
    if (signal !== undefined) {
      waiting = undefined
      Deferred.unsafeDone(signal, Exit.void)
    }
  })
  return { take, release }
}

// The audit entry of one settled delivery: dead-lettered, or processed with its outcome and duration.
const auditEntry = (
  delivery: Delivery,
  outcome: Outcome | undefined,
  category: Failure.Category | undefined,
  start: number,
  end: number,
  group: string | undefined
): AuditLog.EntryInput => ({
  eventId: delivery.message.id,
  stage: outcome === "dead-lettered" ? "dead-lettered" : "processed",
  at: end,
  component: "pipeline",
  topic: delivery.message.topic,
  outcome: outcome ?? "unknown",
  attempt: delivery.attempt,
  durationMs: end - start,
  ...(category === undefined ? {} : { category }),
  ...AuditLog.causationOf(delivery.message.headers),
  ...(group === undefined ? {} : { detail: { group } })
})

/**
 * Consumes `source` with `handler` until the stream ends (then waits for in-flight work) or the fiber is
 * interrupted (then stops taking, lets in-flight work finish within `shutdownTimeout`, and releases the rest).
 */
export const run = <A, I, RS, EH, RH, ES, RSrc>(
  source: Stream.Stream<Delivery, ES, RSrc>,
  handler: Handler<A, EH, RH>,
  options: Options<A, I, RS>
): Effect.Effect<Stats, ES | MiddlewareOrderError, RSrc | RS | RH> =>
  Effect.gen(function*() {
    yield* checkOrder(handler)
    const decode = Envelope.decode(options.schema)
    const concurrency = Math.max(1, options.concurrency ?? 16)
    const ordered = options.orderBy === "subject"
    const maxAttempts = Math.max(1, options.maxAttempts ?? 10)
    const redeliveryDelay = options.redeliveryDelay ?? defaultRedeliveryDelay
    const shutdownTimeout = Duration.decode(options.shutdownTimeout ?? "10 seconds")
    const onSettled = options.onSettled
    const telemetryByTopic = new Map<string, DestinationTelemetry>()
    const telemetryOf = (topic: string): DestinationTelemetry => {
      let found = telemetryByTopic.get(topic)
      if (found === undefined) {
        found = destinationTelemetry(topic, options.system, options.group)
        telemetryByTopic.set(topic, found)
      }
      return found
    }
    // Unordered, nothing is ever parked, so admission alone bounds the work; ordered, admission also counts
    // the parked deliveries and `running` bounds the ones being handled.
    // A FIFO gate rather than Effect's Semaphore: see internal/gate.ts (the semaphore grew waiting workers' stacks).
    const running = ordered ? Gate.make(concurrency) : undefined
    const admission = admissionGate(ordered ? concurrency + Math.max(0, options.buffer ?? concurrency * 4) : concurrency)
    const parked = new Map<string, Array<Delivery>>()
    // How each delivery in flight settled, for the duration histogram's `outcome` tag.
    const outcomes = new WeakMap<Delivery, Outcome>()
    // The failure category of each failed delivery in flight, for its audit entry.
    const categories = new WeakMap<Delivery, Failure.Category>()
    const stats = { acked: 0, nacked: 0, deadLettered: 0, released: 0, settleFailed: 0 }
    let stopping = false

    const report = (settled: Settled) => {
      outcomes.set(settled.delivery, settled.outcome)
      if (settled.verdict !== undefined) categories.set(settled.delivery, settled.verdict.category)
      switch (settled.outcome) {
        case "acked":
          stats.acked++
          break
        case "nacked":
          stats.nacked++
          break
        case "dead-lettered":
          stats.deadLettered++
          break
        case "released":
          stats.released++
          break
        case "settle-failed":
          stats.settleFailed++
          break
      }
      const counted = Effect.zipRight(
        settled.outcome === "dead-lettered"
          ? Effect.zipRight(
            Metric.increment(deliveriesByOutcome[settled.outcome]),
            Metric.increment(deadLetteredMetric(settled.delivery.message.topic, settled.verdict?.category ?? "unknown"))
          )
          : Metric.increment(deliveriesByOutcome[settled.outcome]),
        Observe.emitWith("pipeline", "settled", () => ({
          topic: settled.delivery.message.topic,
          messageId: settled.delivery.message.id,
          attempt: settled.delivery.attempt,
          outcome: settled.outcome,
          category: settled.verdict?.category
        }))
      )
      const annotated = Effect.zipRight(Telemetry.annotate({ [Telemetry.Attr.outcome]: settled.outcome }), counted)
      return onSettled ? Effect.zipRight(annotated, onSettled(settled)) : annotated
    }

    // A failed ack/nack is not fatal: the transport redelivers an unsettled message (at least once).
    const settle = (
      delivery: Delivery,
      outcome: Outcome,
      operation: Effect.Effect<void, unknown>,
      extra?: { verdict: Failure.Verdict; error: Failure.FailureRecord }
    ): Effect.Effect<void> =>
      Effect.matchCauseEffect(operation, {
        onSuccess: () => report({ delivery, outcome, ...extra }),
        onFailure: (cause) =>
          Effect.zipRight(
            Effect.logWarning("settling a delivery failed; the transport will redeliver it", cause).pipe(
              Effect.annotateLogs({ messageId: delivery.message.id, outcome })
            ),
            report({ delivery, outcome: "settle-failed", ...extra })
          )
      })

    const deadLetter = (delivery: Delivery, verdict: Failure.Verdict, error: Failure.FailureRecord): Effect.Effect<void> =>
      settle(
        delivery,
        "dead-lettered",
        delivery.deadLetter(new DeadLetterReason({ category: verdict.category, error, attempts: delivery.attempt })),
        { verdict, error }
      )

    const onFailure = (delivery: Delivery, cause: Cause.Cause<unknown>): Effect.Effect<void> =>
      Effect.gen(function*() {
        if (Cause.isInterruptedOnly(cause)) {
          return yield* settle(delivery, "released", delivery.nack())
        }
        const verdict = yield* Failure.classifyCause(cause)
        const failure = Option.getOrElse(Cause.failureOption(cause), () => Cause.squash(cause))
        const error = Failure.toRecord(failure, verdict)
        if (verdict.classification === "permanent" || delivery.attempt >= maxAttempts) {
          return yield* deadLetter(delivery, verdict, error)
        }
        const backoff = redeliveryDelay(delivery.attempt)
        const delay = verdict.retryAfter && Duration.greaterThan(verdict.retryAfter, backoff)
          ? verdict.retryAfter
          : backoff
        return yield* settle(delivery, "nacked", delivery.nack({ delay }), { verdict, error })
      })

    /**
     * One `process {topic}` consumer span per delivery around the handler and the settlement, continuing the
     * trace the message carries (a root span when it carries none, not a child of whatever started the
     * consumer), with the correlation ids on it and on every span below; also times and counts the delivery.
     */
    const traced = (
      delivery: Delivery,
      carrier: Readonly<Record<string, string>>,
      correlation: Record<string, string>,
      effect: Effect.Effect<void, never, RS | RH>
    ): Effect.Effect<void, never, RS | RH> => {
      const telemetry = telemetryOf(delivery.message.topic)
      const parent = TraceContext.extract(carrier)
      const counted = delivery.attempt > 1
        ? Effect.zipRight(Metric.increment(telemetry.received), Metric.increment(telemetry.redelivered))
        : Metric.increment(telemetry.received)
      return Effect.zipRight(
        counted,
        Effect.flatMap(Clock.currentTimeMillis, (start) =>
          effect.pipe(
            Effect.annotateSpans(correlation),
            Effect.withSpan(telemetry.spanName, {
              kind: "consumer",
              captureStackTrace: false,
              attributes: {
                ...telemetry.attributes,
                ...correlation,
                [Telemetry.Attr.messageId]: delivery.message.id,
                [Telemetry.Attr.attempt]: delivery.attempt,
                [Telemetry.Attr.bodySize]: delivery.message.payload.length
              },
              ...(Option.isSome(parent) ? { parent: parent.value } : { root: true })
            }),
            Effect.zipRight(Effect.flatMap(Clock.currentTimeMillis, (end) => {
              const outcome = outcomes.get(delivery)
              const category = categories.get(delivery)
              outcomes.delete(delivery)
              categories.delete(delivery)
              return Effect.zipRight(
                Metric.update(outcome === "acked" ? telemetry.succeeded : telemetry.failed, (end - start) / 1000),
                AuditLog.record(() => auditEntry(delivery, outcome, category, start, end, options.group))
              )
            }))
          ))
      )
    }

    // The per-delivery path is written with combinators rather than generators: it runs for every message.
    const process = (delivery: Delivery): Effect.Effect<void, never, RS | RH> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.matchEffect(decode(delivery.message.payload), {
          onFailure: (error) => {
            const verdict = Failure.verdict("permanent", "schema")
            return traced(
              delivery,
              delivery.message.headers,
              Telemetry.correlationAttributes(delivery.message),
              deadLetter(delivery, verdict, Failure.toRecord(error, verdict))
            )
          },
          onSuccess: (decoded) =>
            traced(
              delivery,
              carrierOf(delivery.message, decoded.headers),
              Telemetry.correlationAttributes(decoded),
              Effect.flatMap(
                Effect.exit(restore(handler({ ...decoded, attempt: delivery.attempt }))),
                (exit) => Exit.isSuccess(exit) ? settle(delivery, "acked", delivery.ack) : onFailure(delivery, exit.cause)
              )
            )
        })
      )

    const release = (delivery: Delivery): Effect.Effect<void> =>
      settle(delivery, "released", delivery.nack()).pipe(Effect.ensuring(admission.release))

    const handleOne = (delivery: Delivery): Effect.Effect<void, never, RS | RH> =>
      Effect.ensuring(
        stopping
          ? settle(delivery, "released", delivery.nack())
          : running === undefined
          ? process(delivery)
          : running.withPermit(process(delivery)),
        admission.release
      )

    // One worker per busy subject drains that subject's parked deliveries in arrival order.
    const worker = (key: string, first: Delivery): Effect.Effect<void, never, RS | RH> =>
      Effect.gen(function*() {
        let next: Delivery | undefined = first
        while (next !== undefined) {
          yield* handleOne(next)
          const queue = parked.get(key)
          next = queue?.shift()
          if (next === undefined) parked.delete(key)
        }
      })

    const scope = yield* Scope.make()
    const workers = yield* Scope.extend(FiberSet.make<void, never>(), scope)

    const admit = (delivery: Delivery): Effect.Effect<void, never, RS | RH> =>
      Effect.zipRight(admission.take, Effect.suspend(() => {
        const key = ordered && delivery.message.key !== "" ? delivery.message.key : undefined
        if (key === undefined) return FiberSet.run(workers, handleOne(delivery))
        const queue = parked.get(key)
        if (queue !== undefined) {
          queue.push(delivery)
          return Effect.void
        }
        parked.set(key, [])
        return FiberSet.run(workers, worker(key, delivery))
      }))

    const shutdown = <X, Y>(exit: Exit.Exit<X, Y>): Effect.Effect<void> =>
      Effect.gen(function*() {
        if (Exit.isSuccess(exit)) {
          // The source ended: everything admitted is still handled normally.
          yield* FiberSet.awaitEmpty(workers)
        } else {
          stopping = true
          // Parked work has not started, but it is given back by its subject's worker (released, `stopping`)
          // only after the delivery in flight ahead of it has settled: released earlier, a later message of
          // the subject would be redelivered before an earlier one whose handler is still running.
          // Finalizers run uninterruptibly; the wait itself must be interruptible or the timeout never fires.
          yield* Effect.timeout(Effect.interruptible(FiberSet.awaitEmpty(workers)), shutdownTimeout).pipe(Effect.ignore)
        }
        // Whatever is still running is interrupted; each releases its own delivery.
        yield* Scope.close(scope, Exit.void)
        // What interrupted workers had parked goes back after them, in arrival order.
        const waiting = [...parked.values()].flatMap((queue) => queue.splice(0))
        parked.clear()
        yield* Effect.forEach(waiting, release, { discard: true })
      })

    yield* Stream.runForEach(source, admit).pipe(Effect.onExit(shutdown))
    return { ...stats } as Stats
  })
