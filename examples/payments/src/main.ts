/**
 * `npm start`: runs the payments example once and prints the summary. Exit code 0 only when every check
 * passed (every effect exactly once, nothing lost, order kept); 1 otherwise or when the run failed.
 *
 * Environment: `PAYMENTS_WEBHOOKS` (default 2500), `PAYMENTS_CONCURRENCY` (32), `PAYMENTS_SEED` (42),
 * `PAYMENTS_OUTAGE_MS` (3000; 0 for none), `PAYMENTS_PROGRESS` (`auto`, `bar`, `lines`, `off`),
 * `PAYMENTS_KEEP_TABLES=true` to keep a shared database's tables; `BULWARK_DATABASE_URL`, `BULWARK_DATA_DIR`,
 * `BULWARK_TRANSPORT`, `NATS_URL` (see Platform.ts) and the `OTEL_*` variables (see Telemetry.ts).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Config, Console, Effect, Logger } from "effect"
import * as App from "./App.js"
import * as Platform from "./Platform.js"
import * as Progress from "./Progress.js"
import * as Summary from "./Summary.js"
import * as Telemetry from "./Telemetry.js"

const settings = Config.all({
  webhooks: Config.withDefault(Config.integer("PAYMENTS_WEBHOOKS"), App.defaults.load.webhooks),
  concurrency: Config.withDefault(Config.integer("PAYMENTS_CONCURRENCY"), App.defaults.load.concurrency),
  seed: Config.withDefault(Config.integer("PAYMENTS_SEED"), App.defaults.load.seed),
  outageMillis: Config.withDefault(Config.integer("PAYMENTS_OUTAGE_MS"), 3000),
  progress: Config.withDefault(Config.literal("auto", "bar", "lines", "off")("PAYMENTS_PROGRESS"), "auto"),
  keepTables: Config.withDefault(Config.boolean("PAYMENTS_KEEP_TABLES"), false)
})

const program = Effect.gen(function*() {
  const config = yield* settings
  const platform = yield* Platform.fromEnv
  const observations = yield* App.run({
    ...App.defaults,
    load: { ...App.defaults.load, webhooks: config.webhooks, concurrency: config.concurrency, seed: config.seed },
    tablePrefix: platform.tablePrefix,
    dropTables: platform.dropTables && !config.keepTables,
    outage: config.outageMillis > 0 ? { atShare: 0.3, duration: `${config.outageMillis} millis` } : undefined,
    progress: config.progress === "auto" ? Progress.detectMode() : config.progress,
    idempotency: platform.durable ? "sql" : "memory",
    setup: platform.setup
  }).pipe(Effect.provide(platform.layer), Effect.ensuring(Effect.orDie(platform.cleanUp)))
  const summary = Summary.evaluate(observations)
  yield* Console.log(Summary.render(summary))
  if (!summary.ok) process.exitCode = 1
})

program.pipe(
  Effect.provide(Telemetry.layer),
  // stdout carries the summary only; logs go to stderr beside the progress bar.
  Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.prettyLoggerDefault))),
  NodeRuntime.runMain
)
