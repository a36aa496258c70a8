/**
 * The quick start: events go through the in-memory transport with duplicates and transient failures
 * injected, into an idempotent handler. At the end every event must have caused its effect exactly once.
 *
 * Run it with `npm run quickstart` (from the repository root), or `npx tsx --conditions=@bulwark/source examples/quickstart/src/main.ts`
 * (the condition resolves the Bulwark packages to their sources).
 * `QUICKSTART_EVENTS` sets how many distinct events are published (default 1000); `OTEL_*` variables
 * (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`) export its traces to any OTLP backend.
 */
import * as Otel from "@bulwark/tracing/Otel"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect } from "effect"
import { summarize } from "./Quickstart.js"
import * as Quickstart from "./Quickstart.js"

const events = Number(process.env.QUICKSTART_EVENTS ?? "1000")

const main = Effect.gen(function*() {
  if (!Number.isInteger(events) || events < 1) {
    yield* Console.error(`QUICKSTART_EVENTS must be a positive integer, got ${JSON.stringify(process.env.QUICKSTART_EVENTS)}`)
    return yield* Effect.sync(() => { process.exitCode = 2 })
  }
  const report = yield* Quickstart.run({ events, seed: 42 })
  yield* Console.log(summarize(report))
  if (!report.exactlyOnce) yield* Effect.sync(() => { process.exitCode = 1 })
})

// With OTEL_* variables set the run's traces and metrics are exported; without them this layer does nothing.
NodeRuntime.runMain(Effect.provide(main, Otel.layerConfig({ serviceName: "bulwark-quickstart" })), {
  disableErrorReporting: false
})
