/**
 * What tracing costs per delivery: `Pipeline.run` over in-memory deliveries (decode, handler, settle, the
 * `process` span, the metrics) with
 * - no tracer (`Effect.withTracerEnabled(false)`: spans are not created at all), the baseline;
 * - Effect's built-in tracer (what an application without `Otel` gets);
 * - the OpenTelemetry SDK installed by `Otel.layer` with no exporter (spans created and ended, nothing sent).
 *
 * Goal (issue 25): the SDK without an exporter costs ≤ 10% more per delivery than no tracer. Median of several
 * rounds, interleaved so drift hits every variant alike. Results go to bench/results/tracing.{json,md}.
 */
import { Delivery, Envelope, Pipeline } from "@bulwark/core"
import { Effect, Layer, Schema, Stream } from "effect"
import { writeResults } from "../../../bench/lib.js"
import * as Otel from "../src/Otel.js"

const N = 5_000
const ROUNDS = 15
const Payload = Schema.Struct({ orderId: Schema.String, amountCents: Schema.Int })

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const makeDeliveries = Effect.gen(function*() {
  const encode = Envelope.encode(Payload)
  const out: Array<Delivery.Delivery> = []
  for (let i = 0; i < N; i++) {
    const envelope = yield* Envelope.make({
      id: `evt-${i}`,
      type: "com.example.order.paid",
      source: "/bench",
      subject: `customer-${i % 64}`,
      data: { orderId: `o-${i}`, amountCents: i }
    })
    out.push({
      message: {
        id: envelope.id,
        topic: "orders",
        key: envelope.subject,
        payload: yield* encode(envelope),
        headers: { traceparent: `00-${"ab".repeat(16)}-${(i + 1).toString(16).padStart(16, "0")}-01` }
      },
      attempt: 1,
      ack: Effect.void,
      nack: () => Effect.void,
      deadLetter: () => Effect.void
    })
  }
  return out
})

// A handler that does a little work, as a real one would (a lookup, a computation).
const handler = (envelope: Envelope.Envelope<typeof Payload.Type>) =>
  Effect.sync(() => envelope.data.amountCents * 2).pipe(Effect.asVoid)

const runOnce = (deliveries: ReadonlyArray<Delivery.Delivery>) =>
  Pipeline.run(Stream.fromIterable(deliveries), handler, { schema: Payload, concurrency: 16 })

/**
 * CPU ns per delivery of one round under `wrap`: process CPU time rather than wall time, since the machine is
 * shared and wall time mostly measures the neighbours.
 */
const round = (deliveries: ReadonlyArray<Delivery.Delivery>, wrap: <A, E>(e: Effect.Effect<A, E>) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const start = process.cpuUsage()
    yield* wrap(runOnce(deliveries))
    const used = process.cpuUsage(start)
    return ((used.user + used.system) * 1000) / deliveries.length
  })

const main = Effect.gen(function*() {
  const deliveries = yield* makeDeliveries
  const sdk = Otel.layer({ serviceName: "bench", spanProcessors: [], metricExporters: [] })
  const variants = {
    "no tracer": <A, E>(e: Effect.Effect<A, E>) => Effect.withTracerEnabled(e, false),
    "Effect's built-in tracer": <A, E>(e: Effect.Effect<A, E>) => e,
    "OpenTelemetry SDK, no exporter": <A, E>(e: Effect.Effect<A, E>) => e
  }
  const samples: Record<keyof typeof variants, Array<number>> = {
    "no tracer": [],
    "Effect's built-in tracer": [],
    "OpenTelemetry SDK, no exporter": []
  }
  const measure = (name: keyof typeof variants) => round(deliveries, variants[name])
  // Warm-up.
  yield* measure("no tracer")
  yield* measure("Effect's built-in tracer")
  // Started once: its start (resource detection) must not overlap a measured round.
  const sdkContext = yield* Layer.build(sdk)
  yield* Effect.provide(measure("OpenTelemetry SDK, no exporter"), sdkContext)
  for (let r = 0; r < ROUNDS; r++) {
    samples["no tracer"].push(yield* measure("no tracer"))
    samples["Effect's built-in tracer"].push(yield* measure("Effect's built-in tracer"))
    samples["OpenTelemetry SDK, no exporter"].push(yield* Effect.provide(measure("OpenTelemetry SDK, no exporter"), sdkContext))
  }
  // Overhead per round against the same round's baseline, then the median: a loaded machine's drift cancels.
  const overhead = (name: keyof typeof variants) =>
    median(samples[name].map((ns, i) => (ns - samples["no tracer"][i]!) / samples["no tracer"][i]!))
  const rows = (Object.keys(samples) as Array<keyof typeof variants>).map((name) => ({
    variant: name,
    "CPU µs per delivery (median)": (median(samples[name]) / 1000).toFixed(2),
    "vs no tracer (median of per-round ratios)": name === "no tracer" ? "—" : `${(overhead(name) * 100).toFixed(1)}%`
  }))
  const sdkOverhead = overhead("OpenTelemetry SDK, no exporter")
  writeResults("tracing", "Tracing overhead per delivery (Pipeline.run)", rows, [
    `${N} deliveries per round, concurrency 16, median of ${ROUNDS} interleaved rounds; each delivery carries a traceparent, so the process span has a remote parent.`,
    `Goal: OpenTelemetry SDK without an exporter ≤ 10% over no tracer: ${sdkOverhead <= 0.1 ? "met" : "NOT met"} (${(sdkOverhead * 100).toFixed(1)}%).`
  ])
})

Effect.runPromise(Effect.scoped(main)).catch((error) => {
  console.error(error)
  process.exit(1)
})
