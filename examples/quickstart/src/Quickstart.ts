/**
 * A small end-to-end run on the in-memory transport: payments are published with duplicates, a flaky
 * downstream fails some first attempts, and an idempotent handler applies each payment's effect. The
 * report says what happened and whether every payment was applied exactly once.
 */
import { Failure, Handler, Pipeline } from "@bulwark/core"
import { Envelope } from "@bulwark/core"
import { Idempotent, MemoryIdempotencyStore } from "@bulwark/idempotency"
import { Transport } from "@bulwark/transport"
import * as MemoryTransport from "@bulwark/transport/Transport/Memory"
import { Duration, Effect, Fiber, pipe, Schema } from "effect"

/** The event the quick start publishes. */
export const PaymentCaptured = Schema.Struct({
  orderId: Schema.String,
  amountCents: Schema.Int.pipe(Schema.positive())
})

/** What the run observed. */
export interface Report {
  readonly distinct: number
  readonly published: number
  readonly duplicatesInjected: number
  readonly transientFailures: number
  readonly acked: number
  readonly redelivered: number
  readonly deadLettered: number
  readonly duplicatesSuppressed: number
  readonly effectsApplied: number
  readonly appliedTwice: number
  readonly missing: number
  readonly exactlyOnce: boolean
  readonly elapsedMillis: number
}

/** Settings of {@link run}. */
export interface Options {
  /** Distinct payments to publish. */
  readonly events: number
  /** Seeds the choice of duplicates and failures, so two runs with one seed behave alike. */
  readonly seed: number
}

const topic = "payments.captured"

/** A small deterministic generator (mulberry32), so the injected faults are reproducible. */
const random = (seed: number) => {
  let state = seed >>> 0
  return (): number => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// One memory transport; like every Bulwark transport it makes its own spans (send, process).
const memoryTransport = MemoryTransport.layer({ visibilityTimeout: "10 seconds" })

/** Publishes the payments with duplicates, consumes them until nothing is pending, and reports. */
export const run = (options: Options): Effect.Effect<Report> =>
  Effect.gen(function*() {
    const started = Date.now()
    const next = random(options.seed)
    const publish = Transport.publishEnvelopes(PaymentCaptured)

    const envelopes = yield* Effect.forEach(Array.from({ length: options.events }, (_, i) => i), (i) =>
      Envelope.make({
        type: "payment.captured",
        source: "/quickstart/provider",
        subject: `order-${i % 97}`,
        data: { orderId: `order-${i % 97}`, amountCents: 100 + i }
      }))

    // A provider that retries its own sends: a quarter of the payments arrive twice, some three times.
    const stream: Array<Envelope.Envelope<typeof PaymentCaptured.Type>> = []
    let duplicatesInjected = 0
    for (const envelope of envelopes) {
      stream.push(envelope)
      if (next() < 0.25) {
        const copies = next() < 0.2 ? 2 : 1
        for (let c = 0; c < copies; c++) {
          // Late copies: anywhere after the original.
          const position = stream.length + Math.floor(next() * 50)
          stream.splice(Math.min(position, stream.length), 0, envelope)
          duplicatesInjected++
        }
      }
    }

    // The downstream fails the first attempt of about one payment in ten.
    const flaky = new Set(envelopes.filter(() => next() < 0.1).map((e) => e.id))
    const applied = new Map<string, number>()
    let transientFailures = 0

    const applyPayment: Handler.Handler<typeof PaymentCaptured.Type, Failure.TransientError> = (envelope) =>
      Effect.suspend(() => {
        if (flaky.delete(envelope.id)) {
          transientFailures++
          return Effect.fail(new Failure.TransientError({ category: "dependency", message: "ledger busy" }))
        }
        applied.set(envelope.id, (applied.get(envelope.id) ?? 0) + 1)
        return Effect.void
      })

    const handler = pipe(
      applyPayment,
      Idempotent.idempotent({ lease: "5 seconds", retention: "1 hour" })
    )

    const counts = { acked: 0, redelivered: 0, deadLettered: 0 }
    const onSettled = (settled: Pipeline.Settled) =>
      Effect.sync(() => {
        if (settled.outcome === "acked") counts.acked++
        else if (settled.outcome === "nacked") counts.redelivered++
        else if (settled.outcome === "dead-lettered") counts.deadLettered++
      })

    return yield* Effect.gen(function*() {
      const inspector = yield* MemoryTransport.MemoryTransportInspector
      const consumer = yield* Effect.fork(
        Transport.consume(topic, handler, {
          schema: PaymentCaptured,
          concurrency: 32,
          redeliveryDelay: () => Duration.millis(5),
          onSettled
        })
      )
      yield* publish(topic, stream)
      // Everything is settled when the topic has nothing ready, delayed or in flight.
      while (inspector.pending(topic) > 0) yield* Effect.sleep("5 millis")
      yield* Fiber.interrupt(consumer)

      const appliedTwice = [...applied.values()].filter((n) => n > 1).length
      const missing = envelopes.filter((e) => !applied.has(e.id)).length
      const effectsApplied = [...applied.values()].reduce((sum, n) => sum + n, 0)
      return {
        distinct: envelopes.length,
        published: stream.length,
        duplicatesInjected,
        transientFailures,
        acked: counts.acked,
        redelivered: counts.redelivered,
        deadLettered: counts.deadLettered,
        duplicatesSuppressed: counts.acked - effectsApplied,
        effectsApplied,
        appliedTwice,
        missing,
        exactlyOnce: appliedTwice === 0 && missing === 0,
        elapsedMillis: Date.now() - started
      } satisfies Report
    }).pipe(
      Effect.provide(MemoryIdempotencyStore.layer()),
      Effect.provide(memoryTransport)
    )
  }).pipe(Effect.orDie)

/** The report as a short table for a terminal. */
export const summarize = (report: Report): string => {
  const rows: ReadonlyArray<readonly [string, string | number]> = [
    ["distinct payments", report.distinct],
    ["messages published", `${report.published} (${report.duplicatesInjected} duplicates injected)`],
    ["first attempts failed (transient)", report.transientFailures],
    ["redelivered after a nack", report.redelivered],
    ["acked", report.acked],
    ["duplicates suppressed", report.duplicatesSuppressed],
    ["dead-lettered", report.deadLettered],
    ["effects applied", report.effectsApplied],
    ["applied more than once", report.appliedTwice],
    ["never applied", report.missing],
    ["took", `${report.elapsedMillis} ms`]
  ]
  const width = Math.max(...rows.map(([label]) => label.length))
  const lines = rows.map(([label, value]) => `  ${label.padEnd(width)}  ${value}`)
  const verdict = report.exactlyOnce
    ? "OK: every payment was applied exactly once."
    : "FAILED: some payment was applied twice or never."
  return ["Bulwark quick start: payments through the memory transport into an idempotent handler", ...lines, verdict]
    .join("\n")
}
