/**
 * The chaos producer: the documented outbox producer (a conditional state change and `Outbox.append` in one
 * `sql.withTransaction`, with `Effect.retry`), appending `events` events over `keys` keys, `batch` per
 * transaction, at about `rate` events per second. Event `n` has key `k-(n mod keys)` and is number
 * `floor(n / keys)` of its key, so per-key order is checkable downstream. It prints `produced <n>` when done
 * and keeps running (the driver checks that every process is still alive at the end).
 */
import { Envelope } from "@bulwark/core"
import { Outbox } from "@bulwark/outbox"
import { Database } from "@bulwark/sql"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer, Logger, LogLevel, Schedule } from "effect"
import { batchesTable, childConfig, committedTable, Event, outboxTable, topic } from "./config.js"

const config = childConfig()
const events = config.events ?? 1000
const keys = config.keys ?? 50
const batch = config.batch ?? 50
const rate = config.rate ?? 500
const appendEvent = Outbox.append(Event)

const services = Outbox.layer({ table: outboxTable }).pipe(
  Layer.provideMerge(Database.layerPostgres({ url: config.pgUrl, maxConnections: 4, connectRetry: "2 minutes" }))
)

const program = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const started = Date.now()
  for (let first = 0, b = 0; first < events; first += batch, b++) {
    const ns = Array.from({ length: Math.min(batch, events - first) }, (_, i) => first + i)
    // Built before the transaction: every attempt carries the same ids.
    const envelopes = yield* Effect.forEach(ns, (n) =>
      Envelope.make({
        id: `e-${n}`,
        type: "chaos.event",
        source: "/chaos",
        subject: `k-${n % keys}`,
        data: { n, key: `k-${n % keys}`, seq: Math.floor(n / keys) }
      }))
    yield* sql.withTransaction(Effect.gen(function*() {
      // Conditional: a retry of a transaction that did commit (CommitUnknown) appends nothing.
      const fresh = yield* sql`INSERT INTO ${sql(batchesTable)} (batch) VALUES (${b}) ON CONFLICT DO NOTHING RETURNING batch`
      if (fresh.length === 0) return
      yield* appendEvent(topic, envelopes)
      yield* sql`INSERT INTO ${sql(committedTable)} ${sql.insert(ns.map((n) => ({ event_id: `e-${n}` })))}`
    })).pipe(
      Effect.retry(Schedule.exponential("100 millis").pipe(
        Schedule.either(Schedule.spaced("2 seconds")),
        Schedule.jittered,
        Schedule.upTo("5 minutes")
      ))
    )
    // Paced: about `rate` events per second overall.
    const due = started + ((first + ns.length) / rate) * 1000
    const wait = due - Date.now()
    if (wait > 0) yield* Effect.sleep(wait)
  }
  process.stdout.write(`produced ${events}\n`)
  return yield* Effect.never
})

Effect.runPromise(
  program.pipe(Effect.provide(services), Logger.withMinimumLogLevel(LogLevel.Warning))
).catch((error) => {
  process.stderr.write(`producer ended: ${String(error)}\n`)
  process.exit(1)
})
