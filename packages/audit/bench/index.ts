/**
 * What the audit log costs per delivery, on the real PostgreSQL with the SQL driver (batched writes).
 *
 * One delivery: an envelope published (memory transport), consumed by a pipeline whose handler writes one
 * row to PostgreSQL (the business effect). With the audit log, each delivery also writes two entries
 * (`published`, `processed`), buffered and inserted 500 at a time beside the business writes. Without it,
 * the same run has no `AuditLog` in context. The clock runs from the first publish until the last handler
 * ran; the audited runs then check that every entry reached the table (after a flush outside the clock).
 *
 * The two variants run `rounds` times, interleaved; the median is reported, with the spread and this
 * process's CPU time per delivery (PostgreSQL's is not included).
 */
import { AuditLog as Port, Envelope } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import { Memory, Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Fiber, Layer, ManagedRuntime, Schema } from "effect"
import { writeResults } from "../../../bench/lib.js"
import * as SqlAuditLog from "../src/AuditLog/Sql.js"

const url = process.env["BULWARK_BENCH_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const deliveries = Number(process.env["BENCH_EVENTS"] ?? 4_000)
const rounds = Number(process.env["BENCH_ROUNDS"] ?? 5)
const concurrency = 16
const suffix = `${Date.now().toString(36)}${process.pid}`
let runs = 0

const Payment = Schema.Struct({ n: Schema.Number })

const runOnce = async (audited: boolean, count: number) => {
  const table = `bench_audit_fx_${suffix}_${runs}`
  const auditTable = `bench_audit_${suffix}_${runs++}`
  const database = Database.layerPostgres({ url, maxConnections: 10 })
  const base = Layer.merge(Memory.layer(), database)
  const layer = audited ? Layer.provideMerge(SqlAuditLog.layer({ table: auditTable }), base) : base
  const runtime = ManagedRuntime.make(layer)
  try {
    return await runtime.runPromise(Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql.unsafe(`CREATE TABLE ${table} (id text PRIMARY KEY, n integer NOT NULL)`)
      const envelopes = yield* Effect.forEach(Array.from({ length: count }, (_, n) => n), (n) =>
        Envelope.make({ type: "payment", source: "/bench", subject: `s${n % 500}`, data: { n } }))
      let handled = 0
      const wall = performance.now()
      const cpu = process.cpuUsage()
      const consumer = yield* Transport.consume(
        "payments",
        (envelope: Envelope.Envelope<{ readonly n: number }>) =>
          Effect.zipRight(sql`INSERT INTO ${sql(table)} (id, n) VALUES (${envelope.id}, ${envelope.data.n})`, Effect.sync(() => handled++)),
        { schema: Payment, concurrency }
      ).pipe(Effect.orDie, Effect.fork)
      for (let i = 0; i < envelopes.length; i += 100) {
        yield* Transport.publishEnvelopes(Payment)("payments", envelopes.slice(i, i + 100))
      }
      while (handled < count) yield* Effect.sleep("2 millis")
      const seconds = (performance.now() - wall) / 1000
      const used = process.cpuUsage(cpu)
      yield* Fiber.interrupt(consumer)
      let auditRows = 0
      if (audited) {
        const log = yield* Port.AuditLog
        yield* log.flush
        auditRows = (yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(auditTable)}`)[0]!.n
        yield* SqlAuditLog.drop(auditTable)
      }
      yield* sql.unsafe(`DROP TABLE ${table}`)
      return { perSecond: count / seconds, cpuMicros: (used.user + used.system) / count, auditRows }
    }) as Effect.Effect<{ perSecond: number; cpuMicros: number; auditRows: number }, unknown, never>)
  } finally {
    await runtime.dispose()
  }
}

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

const main = async () => {
  // Warm-up (JIT, connections), unmeasured.
  await runOnce(false, 1000)
  await runOnce(true, 1000)
  const plain: Array<{ perSecond: number; cpuMicros: number }> = []
  const audited: Array<{ perSecond: number; cpuMicros: number; auditRows: number }> = []
  for (let round = 0; round < rounds; round++) {
    plain.push(await runOnce(false, deliveries))
    audited.push(await runOnce(true, deliveries))
    console.log(`round ${round + 1}: without ${plain.at(-1)!.perSecond.toFixed(0)}/s, with ${audited.at(-1)!.perSecond.toFixed(0)}/s`)
  }
  const missing = audited.filter((r) => r.auditRows !== 2 * deliveries)
  if (missing.length > 0) throw new Error(`audit rows missing: ${missing.map((r) => r.auditRows).join(", ")} (expected ${2 * deliveries})`)
  const rate = (rs: ReadonlyArray<{ perSecond: number }>) => median(rs.map((r) => r.perSecond))
  const cpu = (rs: ReadonlyArray<{ cpuMicros: number }>) => median(rs.map((r) => r.cpuMicros))
  const spread = (rs: ReadonlyArray<{ perSecond: number }>) =>
    `${Math.min(...rs.map((r) => r.perSecond)).toFixed(0)} – ${Math.max(...rs.map((r) => r.perSecond)).toFixed(0)}`
  const extraTime = (rate(plain) / rate(audited) - 1) * 100
  const extraCpu = (cpu(audited) / cpu(plain) - 1) * 100
  writeResults("audit", "Audit log cost per delivery on PostgreSQL (SQL driver, batched writes)", [
    {
      variant: "no audit log",
      deliveries,
      "deliveries/s": rate(plain).toFixed(0),
      "min – max deliveries/s": spread(plain),
      "node CPU µs/delivery": cpu(plain).toFixed(0)
    },
    {
      variant: "SQL audit log (2 entries per delivery)",
      deliveries,
      "deliveries/s": rate(audited).toFixed(0),
      "min – max deliveries/s": spread(audited),
      "node CPU µs/delivery": cpu(audited).toFixed(0)
    }
  ], [
    `Extra time per delivery with the audit log: ${extraTime.toFixed(1)}% (goal ≤ 15%); extra node CPU per delivery: ${extraCpu.toFixed(1)}%.`,
    "One delivery = publish (memory transport) + pipeline + a handler inserting one row into PostgreSQL; the audit log adds `published` and `processed` entries, inserted 500 per statement in the background.",
    `Median of ${rounds} rounds per variant, interleaved, after an unmeasured warm-up of each; pipeline concurrency ${concurrency}, pool of 10 connections.`,
    "Every audited round checked afterwards that all 2 entries per delivery reached the table.",
    "The machine is a small shared VM, loaded by other work while this ran: single rounds vary by tens of percent; compare the variants of one run, not runs of different days."
  ])
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
