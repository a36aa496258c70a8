/**
 * The dispatcher soak at full size: 10,000 messages over 20 local endpoints (2 answering 410 after 50
 * requests, 3 failing 30% of theirs), two workers over one PostgreSQL store, restarted when 40% are
 * delivered. Run by `npm run bench -- webhook` after the verification benchmarks, or on its own.
 */
import { Database } from "@bulwark/sql"
import { Effect } from "effect"
import { writeResults } from "../../../bench/lib.js"
import * as SqlDispatchStore from "../src/DispatchStore/Sql.js"
import { soak } from "../test/support/soak.js"

const url = process.env["BULWARK_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const table = `bulwark_whsoak_bench_${Date.now().toString(36)}`
const messages = 10_000
const report = await Effect.runPromise(
  soak({ messages, endpoints: 20, goneEndpoints: 2, goneAfter: 50, flakyEndpoints: 3, failureRate: 0.3, restartAt: 0.4, table }).pipe(
    Effect.ensuring(Effect.orDie(SqlDispatchStore.drop(table))),
    Effect.provide(Database.layerPostgres({ url }))
  )
)
const duplicates = [...report.successes].filter(([id, n]) => n > 1 && !report.unseenAnswer.has(id)).length
const undelivered = [...report.endpointOf].filter(([id, e]) => !report.gone.has(e) && (report.successes.get(id) ?? 0) === 0).length
writeResults("webhook-dispatcher", "Webhook dispatcher soak (durable delivery, PostgreSQL store)", [{
  messages,
  endpoints: 20,
  "HTTP requests": report.requests,
  "wall s": (report.millis / 1000).toFixed(1),
  "deliveries/s": Math.round((messages - (report.states["failed"] ?? 0)) / (report.millis / 1000)),
  "duplicate successes": duplicates,
  "repeats after an unseen answer": report.unseenAnswer.size,
  "undelivered (healthy endpoints)": undelivered,
  delivered: report.states["delivered"] ?? 0,
  "failed (410 endpoints)": report.states["failed"] ?? 0,
  pending: report.states["pending"] ?? 0
}], [
  "Two dispatcher workers (concurrency 25 each) over one PostgreSQL 15 store on 127.0.0.1; endpoints are paths of one local node:http server.",
  "Endpoints 0–1 answer 410 after 50 requests (then disabled: their later deliveries fail as gone/disabled); endpoints 2–4 answer 503 to 30% of requests (half with Retry-After: 0); retries every 25–400 ms, 14 attempts.",
  "Both workers are stopped gracefully when 40% of the messages are delivered and started again over the same store (attempts in flight finish and are recorded).",
  `Attempts of the first 50 messages read back after the restart: ${report.sampleAttempts}.`,
  "Workers, store and endpoints share 2 cores: wall time is indicative; the counts are the result."
])
if (duplicates > 0 || undelivered > 0 || (report.states["pending"] ?? 0) > 0) process.exit(1)
