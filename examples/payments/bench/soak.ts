/**
 * The soak itself (started by `index.ts` with a capped heap and `--expose-gc`): one flagship run over
 * PostgreSQL (its own table prefix, dropped at the end) and the memory transport, sampling the heap after a
 * full GC every `every` answered webhooks. Passes when every check of the flagship is ✔ and the post-GC heap
 * is flat: over the second half of the run (once the JIT's code and the bounded caches have filled) no floor
 * is more than `secondHalfToleranceMb` above the floor at the middle, and the last floor is at most
 * `flatToleranceMb` above the first.
 * Writes bench/results/payments-soak.{json,md}.
 */
import { Effect, Logger, LogLevel } from "effect"
import os from "node:os"
import { writeResults } from "../../../bench/lib.js"
import * as App from "../src/App.js"
import * as Platform from "../src/Platform.js"
import * as Summary from "../src/Summary.js"

const webhooks = Number(process.env.PAYMENTS_SOAK_WEBHOOKS ?? 100_000)
const every = Math.max(100, Math.round(webhooks / 40))
const flatToleranceMb = 32
const secondHalfToleranceMb = 4
process.env.BULWARK_DATABASE_URL ??= "postgres://postgres@127.0.0.1:5432/test"

const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) {
  console.error("run through bench/index.ts (it passes --expose-gc)")
  process.exit(2)
}
// V8's limit adds the young generation to --max-old-space-size (256 MB gives a limit of about 304 MB).
const heapLimitMb = Math.round((await import("node:v8")).getHeapStatistics().heap_size_limit / 2 ** 20)
const oldSpaceMb = process.env.PAYMENTS_SOAK_HEAP_MB ?? "256"

interface Sample {
  readonly webhooks: number
  readonly seconds: number
  readonly heapMb: number
}
const samples: Array<Sample> = []
const started = Date.now()
const floor = (done: number) => {
  gc()
  const sample = { webhooks: done, seconds: (Date.now() - started) / 1000, heapMb: process.memoryUsage().heapUsed / 2 ** 20 }
  samples.push(sample)
  // One line per sample as it is taken, so a run stopped early still shows its floors.
  console.error(
    `heap floor after ${done} webhooks at ${sample.seconds.toFixed(1)} s: ${sample.heapMb.toFixed(1)} MB (load ${os.loadavg().map((l) => l.toFixed(1)).join("/")})`
  )
}
const loadBefore = os.loadavg()

const program = Effect.gen(function*() {
  const platform = yield* Platform.fromEnv
  const observations = yield* App.run({
    ...App.defaults,
    load: { ...App.defaults.load, webhooks },
    tablePrefix: platform.tablePrefix,
    dropTables: platform.dropTables,
    idempotency: "sql",
    setup: platform.setup,
    progress: "lines",
    // A deadline, not a duration: on a loaded machine the last backlog can take a few minutes to drain. (It
    // also bounds each wait of the replay rounds, so it is not made longer than it needs to be.)
    settleTimeout: "3 minutes",
    onWebhookDone: (done) => {
      if (done % every === 0) floor(done)
    }
  }).pipe(Effect.provide(platform.layer), Effect.ensuring(Effect.orDie(platform.cleanUp)))
  return Summary.evaluate(observations)
})

const summary = await Effect.runPromise(program.pipe(
  Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.prettyLoggerDefault))),
  Logger.withMinimumLogLevel(LogLevel.Warning)
))
const seconds = (Date.now() - started) / 1000
console.log(Summary.render(summary))

const mb = (n: number) => n.toFixed(1)
const first = samples[0]!
const middle = samples[Math.floor(samples.length / 2)]!
const last = samples[samples.length - 1]!
const peak = samples.reduce((a, b) => (b.heapMb > a.heapMb ? b : a))
const secondHalfRise = Math.max(...samples.slice(samples.indexOf(middle)).map((s) => s.heapMb)) - middle.heapMb
const flat = last.heapMb - first.heapMb <= flatToleranceMb && secondHalfRise <= secondHalfToleranceMb
const ok = summary.ok && flat
const rows = [
  ...[["first", first], ["middle", middle], ["last", last], ["highest", peak]].map(([label, s]) => ({
    "post-GC floor": label as string,
    "after webhooks": (s as Sample).webhooks,
    "at (s)": mb((s as Sample).seconds),
    "heap used (MB)": mb((s as Sample).heapMb)
  }))
]
writeResults("payments-soak", "Payments soak: the flagship on PostgreSQL under a capped heap", rows, [
  `${webhooks} webhooks (${summary.numbers.accepted} accepted, ${summary.numbers.ordersPaid} orders paid, ${summary.numbers.shipmentsBooked} shipments) in ${mb(seconds)} s with --max-old-space-size=${oldSpaceMb} (V8 heap limit ${heapLimitMb} MB), PostgreSQL 127.0.0.1:5432, memory transport.`,
  `Checks: ${summary.checks.map((c) => `${c.ok ? "✔" : "✘"} ${c.name}`).join("; ")}.`,
  `Post-GC heap sampled every ${every} answered webhooks (${samples.length} samples): ${samples.map((s) => mb(s.heapMb)).join(", ")} MB.`,
    `Flat: over the second half the highest floor is ${mb(secondHalfRise)} MB above the middle one (tolerance ${secondHalfToleranceMb} MB), ` +
    `the last floor ${mb(last.heapMb - first.heapMb)} MB above the first (tolerance ${flatToleranceMb} MB): ${flat ? "yes" : "NO"}; ` +
      `from the middle to the last sample the floor moved ${mb(((last.heapMb - middle.heapMb) / Math.max(1, last.webhooks - middle.webhooks)) * 10_000)} MB per 10 000 webhooks.`,
  `Load average (1/5/15 min) at start ${loadBefore.map((l) => l.toFixed(1)).join("/")}, at end ${os.loadavg().map((l) => l.toFixed(1)).join("/")}: the 2 cores are shared with other work, so the duration says little; the heap floors are what this measures.`,
  ok ? "Targets met." : "TARGETS MISSED."
])
process.exit(ok ? 0 : 1)
