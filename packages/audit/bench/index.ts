/**
 * What the audit log costs per delivery, on the real PostgreSQL with the SQL driver (batched writes).
 *
 * One delivery: an envelope published (memory transport), consumed by a pipeline whose handler writes one
 * row to PostgreSQL (the business effect). With the audit log, each delivery also writes two entries
 * (`published`, `processed`), buffered and inserted in batches beside the business writes. Without it, the
 * same run has no `AuditLog` in context. Three variants: no audit log, the SQL driver, and the SQL driver's
 * previous write path (`previous.ts`: the same table, written as it was before it was made cheaper).
 *
 * Wall time runs from the first publish until the last handler ran. CPU per delivery is this process's
 * plus the PostgreSQL backends' serving it (found by `application_name`, read from `/proc/<pid>/stat`),
 * from the first publish until every entry is stored (the final flush included): on a loaded machine,
 * CPU is steadier than wall time. The audited runs check afterwards that every entry reached the table.
 *
 * The variants run `rounds` times, interleaved (the order rotating each round); medians are reported.
 */
import { AuditLog as Port, Envelope } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import { Memory, Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Fiber, Layer, ManagedRuntime, Schema } from "effect"
import { readFileSync } from "node:fs"
import { loadavg } from "node:os"
import { writeResults } from "../../../bench/lib.js"
import * as SqlAuditLog from "../src/AuditLog/Sql.js"
import * as Previous from "./previous.js"

const url = process.env["BULWARK_BENCH_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const deliveries = Number(process.env["BENCH_EVENTS"] ?? 4_000)
const rounds = Number(process.env["BENCH_ROUNDS"] ?? 5)
const concurrency = 16
const suffix = `${Date.now().toString(36)}${process.pid}`
let runs = 0

const Payment = Schema.Struct({ n: Schema.Number })

type Variant = "none" | "sql" | "previous"
const variants: ReadonlyArray<Variant> = ["none", "sql", "previous"]
const labels: Record<Variant, string> = {
  none: "no audit log",
  sql: "SQL audit log (2 entries per delivery)",
  previous: "SQL audit log, previous write path (2 entries per delivery)"
}

// ---------------------------------------------------------------- server CPU
const ticksPerSecond = 100
/** CPU seconds (user + system) a backend process has used, or undefined when /proc cannot tell (remote server). */
const backendCpu = (pid: number): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond
  } catch {
    return undefined
  }
}
const withApp = (app: string) => `${url}${url.includes("?") ? "&" : "?"}application_name=${app}`

const runOnce = async (variant: Variant, count: number) => {
  const table = `bench_audit_fx_${suffix}_${runs}`
  const auditTable = `bench_audit_${suffix}_${runs}`
  const app = `bench_audit_${suffix}_${runs++}`
  const database = Database.layerPostgres({ url: withApp(app), maxConnections: 10 })
  const base = Layer.merge(Memory.layer(), database)
  const layer = variant === "sql"
    ? Layer.provideMerge(SqlAuditLog.layer({ table: auditTable }), base)
    : variant === "previous"
    ? Layer.provideMerge(Previous.layer({ table: auditTable }), base)
    : base
  if (variant === "previous") {
    const setup = ManagedRuntime.make(Database.layerPostgres({ url, maxConnections: 1 }))
    await setup.runPromise(Previous.createTable(auditTable))
    await setup.dispose()
  }
  const runtime = ManagedRuntime.make(layer)
  try {
    return await runtime.runPromise(Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql.unsafe(`CREATE TABLE ${table} (id text PRIMARY KEY, n integer NOT NULL)`)
      const envelopes = yield* Effect.forEach(Array.from({ length: count }, (_, n) => n), (n) =>
        Envelope.make({ type: "payment", source: "/bench", subject: `s${n % 500}`, data: { n } }))
      // Open every connection of the pool first, so each backend is counted from the start.
      yield* Effect.all(Array.from({ length: 10 }, () => sql`SELECT pg_sleep(0.05)`), { concurrency: 10 })
      const pids = (yield* sql<{ pid: number }>`SELECT pid FROM pg_stat_activity WHERE application_name = ${app}`).map((r) => r.pid)
      const serverBefore = pids.map(backendCpu)
      let handled = 0
      const load = loadavg()[0]!
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
      yield* Fiber.interrupt(consumer)
      // Every entry stored: its whole cost is in the CPU figures.
      if (variant !== "none") yield* Effect.flatMap(Port.AuditLog, (log) => log.flush)
      const used = process.cpuUsage(cpu)
      const serverAfter = pids.map(backendCpu)
      const server = serverBefore.every((b) => b !== undefined) && serverAfter.every((a) => a !== undefined)
        ? serverAfter.reduce((sum, a, i) => sum! + a! - serverBefore[i]!, 0)!
        : Number.NaN
      let auditRows = 0
      if (variant !== "none") {
        auditRows = (yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(auditTable)}`)[0]!.n
      }
      yield* sql.unsafe(`DROP TABLE ${table}`)
      return {
        perSecond: count / seconds,
        nodeMicros: (used.user + used.system) / count,
        pgMicros: server * 1e6 / count,
        auditRows,
        load
      }
    }) as Effect.Effect<Measured, unknown, never>)
  } finally {
    await runtime.dispose()
    if (variant !== "none") {
      const cleanup = ManagedRuntime.make(Database.layerPostgres({ url, maxConnections: 1 }))
      await cleanup.runPromise(SqlAuditLog.drop(auditTable))
      await cleanup.dispose()
    }
  }
}

interface Measured {
  readonly perSecond: number
  readonly nodeMicros: number
  readonly pgMicros: number
  readonly auditRows: number
  readonly load: number
}

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

const main = async () => {
  // Warm-up (JIT, connections), unmeasured.
  for (const variant of variants) await runOnce(variant, 1000)
  const results: Record<Variant, Array<Measured>> = { none: [], sql: [], previous: [] }
  for (let round = 0; round < rounds; round++) {
    // Interleaved, and rotated so that no variant always runs first or last in a round.
    for (let i = 0; i < variants.length; i++) {
      const variant = variants[(i + round) % variants.length]!
      results[variant].push(await runOnce(variant, deliveries))
    }
    console.log(`round ${round + 1}: ${variants.map((v) => `${v} ${results[v].at(-1)!.perSecond.toFixed(0)}/s`).join(", ")}`)
  }
  for (const variant of ["sql", "previous"] as const) {
    const missing = results[variant].filter((r) => r.auditRows !== 2 * deliveries)
    if (missing.length > 0) throw new Error(`${variant}: audit rows missing: ${missing.map((r) => r.auditRows).join(", ")} (expected ${2 * deliveries})`)
  }
  const med = (variant: Variant, pick: (m: Measured) => number) => median(results[variant].map(pick))
  const rate = (v: Variant) => med(v, (m) => m.perSecond)
  const cpu = (v: Variant) => med(v, (m) => m.nodeMicros + m.pgMicros)
  const extraTime = (v: Variant) => (rate("none") / rate(v) - 1) * 100
  const extraCpu = (v: Variant) => (cpu(v) / cpu("none") - 1) * 100
  const loads = variants.flatMap((v) => results[v].map((m) => m.load))
  const spread = (v: Variant) =>
    `${Math.min(...results[v].map((r) => r.perSecond)).toFixed(0)} – ${Math.max(...results[v].map((r) => r.perSecond)).toFixed(0)}`
  writeResults("audit", "Audit log cost per delivery on PostgreSQL (SQL driver, batched writes)", variants.map((v) => ({
    variant: labels[v],
    deliveries,
    "deliveries/s": rate(v).toFixed(0),
    "min – max deliveries/s": spread(v),
    "extra time/delivery": v === "none" ? "—" : `${extraTime(v).toFixed(1)}%`,
    "node CPU µs/delivery": med(v, (m) => m.nodeMicros).toFixed(0),
    "PostgreSQL CPU µs/delivery": med(v, (m) => m.pgMicros).toFixed(0),
    "extra CPU/delivery (node + PostgreSQL)": v === "none" ? "—" : `${extraCpu(v).toFixed(1)}%`
  })), [
    `Extra per delivery with the SQL audit log: ${extraTime("sql").toFixed(1)}% time, ${extraCpu("sql").toFixed(1)}% CPU (node + PostgreSQL) (goal ≤ 15%); with the previous write path: ${extraTime("previous").toFixed(1)}% time, ${extraCpu("previous").toFixed(1)}% CPU.`,
    "One delivery = publish (memory transport) + pipeline + a handler inserting one row into PostgreSQL; the audit log adds `published` and `processed` entries, written in batches of up to 500 in the background.",
    "The SQL driver inserts a batch as one statement with one array parameter per column (`unnest`), `synchronous_commit` off for that statement's transaction (one round trip), from a plain array buffer woken once per batch; the previous path inserted one `VALUES` list with 14 placeholders per row inside BEGIN / SET LOCAL / COMMIT, from an Effect queue signalled on every write, copying every entry's `detail` to redact it.",
    `Median of ${rounds} rounds per variant, interleaved (order rotating each round), after an unmeasured warm-up of each; pipeline concurrency ${concurrency}, pool of 10 connections.`,
    "CPU = this process's user + system time plus that of the PostgreSQL backends serving its pool (`/proc/<pid>/stat`, 10 ms ticks), from the first publish until every audit entry is stored; wall time until the last handler ran.",
    "Every audited round checked afterwards that all 2 entries per delivery reached the table.",
    `Load average (1 min) at the start of the measured runs: ${Math.min(...loads).toFixed(1)} – ${Math.max(...loads).toFixed(1)}, median ${median(loads).toFixed(1)}, on 2 cores shared with other work: single rounds vary by tens of percent; compare the variants of one run, not runs of different days.`
  ])
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
