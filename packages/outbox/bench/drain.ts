/**
 * The outbox's two hot paths on the real Postgres, each side by side with hand-written `pg` loops in one run:
 *
 * - **drain**: a pre-filled outbox (`DRAIN_ROWS`, default 50,000 rows over 1,000 keys) emptied by one relay
 *   at batch 100 and 1000. Bulwark's `Relay.round` loop (store and relay as shipped, memory transport) against
 *   raw `pg` select-`FOR UPDATE SKIP LOCKED`-publish-delete in one transaction, and raw `DELETE … RETURNING`.
 *   pg-boss `fetch` + `complete` over the same number of jobs as the peer library.
 * - **append**: 8 producers, each transaction one business insert and one event: Bulwark (`sql.withTransaction`
 *   + `Outbox.append`) against raw `pg` running the same two inserts in `BEGIN`/`COMMIT`.
 *
 * Besides events/s it reports Postgres's CPU per event: the user + system time of the server backends serving
 * the system under test (read from `/proc/<pid>/stat` of each backend, found by `application_name`), so a
 * design that makes the server work harder shows even when the client hides it.
 */
import { Envelope } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import { Memory, Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, ManagedRuntime, Schema } from "effect"
import { readFileSync } from "node:fs"
import os from "node:os"
import { fileURLToPath } from "node:url"
import pg from "pg"
import PgBoss from "pg-boss"
import { benchWorker, type Row, writeResults } from "../../../bench/lib.js"
import * as Outbox from "../src/Outbox.js"
import * as OutboxStore from "../src/OutboxStore.js"
import * as Relay from "../src/Relay.js"

const baseUrl = process.env["BULWARK_BENCH_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const drainRows = Number(process.env["DRAIN_ROWS"] ?? 50_000)
const appendTx = Number(process.env["APPEND_TX"] ?? 4_000)
const keys = 1000
const producers = 8
const rounds = Number(process.env["BENCH_ROUNDS"] ?? 5)
const suffix = `${Date.now().toString(36)}${process.pid}`
let runs = 0

const urlFor = (app: string) => `${baseUrl}${baseUrl.includes("?") ? "&" : "?"}application_name=${app}`
const monitor = new pg.Pool({ connectionString: urlFor(`bench_monitor_${suffix}`), max: 1 })

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
const backendsOf = async (app: string) =>
  (await monitor.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = $1", [app])).rows
    .map((r) => r.pid)
/** Starts a clock on this process and on the server backends of `app`: wall, Node CPU, Postgres CPU. */
const startClock = async (app: string) => {
  const pids = await backendsOf(app)
  const before = new Map(pids.map((pid) => [pid, backendCpu(pid)]))
  const wall = performance.now()
  const cpu = process.cpuUsage()
  return async () => {
    const seconds = (performance.now() - wall) / 1000
    const used = process.cpuUsage(cpu)
    let server: number | undefined = 0
    for (const pid of new Set([...pids, ...await backendsOf(app)])) {
      const end = backendCpu(pid)
      if (end === undefined || server === undefined) server = undefined
      else server += end - (before.get(pid) ?? 0)
    }
    return { seconds, nodeMicros: used.user + used.system, pgMicros: server === undefined ? NaN : server * 1e6 }
  }
}
type Measured = Awaited<ReturnType<Awaited<ReturnType<typeof startClock>>>> & { readonly events: number }

// ---------------------------------------------------------------- drain
const createTable = async (table: string) => {
  // The table and indexes Bulwark's migrations create, so every system drains the same rows from the same shape.
  const runtime = ManagedRuntime.make(Database.layerPostgres({ url: baseUrl, maxConnections: 1 }))
  await runtime.runPromise(Effect.asVoid(Outbox.make({ table })))
  await runtime.dispose()
}
const fill = async (table: string) => {
  await monitor.query(`INSERT INTO ${table} (topic, message_id, key, payload, headers)
    SELECT 'orders', 'm-' || g, 'order-' || (g % ${keys}),
      convert_to(json_build_object('specversion', '1.0', 'id', gen_random_uuid(), 'source', '/bench',
        'type', 'com.example.order.paid', 'subject', 'order-' || (g % ${keys}), 'time', now(),
        'data', json_build_object('orderId', 'o-' || g, 'amount', g))::text, 'UTF8'),
      '{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}'
    FROM generate_series(1, ${drainRows}) g`)
  await monitor.query(`ANALYZE ${table}`)
}
const dropTable = async (table: string) => {
  const runtime = ManagedRuntime.make(Database.layerPostgres({ url: baseUrl, maxConnections: 1 }))
  await runtime.runPromise(Outbox.drop(table))
  await runtime.dispose()
}

interface Published {
  readonly id: string
  readonly key: string
  readonly payload: Uint8Array
  readonly headers: Record<string, string>
}
const toMessage = (row: Record<string, any>): Published => ({
  id: row.message_id,
  key: row.key,
  payload: new Uint8Array(row.payload),
  headers: JSON.parse(row.headers)
})

const drainBulwark = async (batch: number, partitioned = false): Promise<Measured> => {
  const table = `bench_drain_${suffix}_${runs++}`
  const app = `bench_bulwark_${suffix}_${runs}`
  await createTable(table)
  await fill(table)
  const program = Effect.gen(function*() {
    const store = yield* Outbox.make({ table, partitioned })
    const memory = yield* Memory.make()
    const relay = yield* Relay.make({ batchSize: batch, relayId: "bench" }).pipe(
      Effect.provideService(OutboxStore.OutboxStore, store),
      Effect.provideService(Transport.Publisher, { publish: memory.publish })
    )
    yield* relay.round // opens the pool's connection before the clock starts, as the raw loops do
    const stop = yield* Effect.promise(() => startClock(app))
    let published = 0
    for (;;) {
      const result = yield* relay.round
      if (result.claimed === 0) break
      published += result.published
    }
    const measured = yield* Effect.promise(stop)
    return { ...measured, events: published }
  })
  const result = await Effect.runPromise(
    program.pipe(Effect.provide(Database.layerPostgres({ url: urlFor(app), maxConnections: 1 })))
  )
  await dropTable(table)
  return result
}

const claimColumns = "id, topic, message_id, key, payload, headers, attempts"
/** Raw `pg`: one transaction per batch: select `FOR UPDATE SKIP LOCKED`, publish, delete by id. */
const drainSelectDelete = async (batch: number): Promise<Measured> => {
  const table = `bench_drain_${suffix}_${runs++}`
  const app = `bench_rawsel_${suffix}_${runs}`
  await createTable(table)
  await fill(table)
  const client = new pg.Client({ connectionString: urlFor(app) })
  await client.connect()
  const sink: Array<Published> = []
  const select = `SELECT ${claimColumns} FROM ${table} WHERE state = 'pending' AND available_at <= now()
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`
  const remove = `DELETE FROM ${table} WHERE id = ANY($1::bigint[])`
  const stop = await startClock(app)
  let events = 0
  for (;;) {
    await client.query("BEGIN")
    const { rows } = await client.query(select, [batch])
    for (const row of rows) sink.push(toMessage(row))
    if (rows.length > 0) await client.query(remove, [rows.map((r) => r.id)])
    await client.query("COMMIT")
    if (rows.length === 0) break
    events += rows.length
  }
  const measured = await stop()
  await client.end()
  await dropTable(table)
  return { ...measured, events }
}

/** Raw `pg`: `DELETE … WHERE id = ANY(ARRAY(SELECT … SKIP LOCKED)) RETURNING`, then publish (autocommit). */
const drainDeleteReturning = async (batch: number): Promise<Measured> => {
  const table = `bench_drain_${suffix}_${runs++}`
  const app = `bench_rawdel_${suffix}_${runs}`
  await createTable(table)
  await fill(table)
  const client = new pg.Client({ connectionString: urlFor(app) })
  await client.connect()
  const sink: Array<Published> = []
  const remove = `DELETE FROM ${table} WHERE id = ANY(ARRAY(SELECT id FROM ${table}
      WHERE state = 'pending' AND available_at <= now() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED))
    RETURNING ${claimColumns}`
  const stop = await startClock(app)
  let events = 0
  for (;;) {
    const { rows } = await client.query(remove, [batch])
    if (rows.length === 0) break
    rows.sort((a, b) => Number(a.id) - Number(b.id))
    for (const row of rows) sink.push(toMessage(row))
    events += rows.length
  }
  const measured = await stop()
  await client.end()
  await dropTable(table)
  return { ...measured, events }
}

/** pg-boss 10: the same number of jobs inserted before the clock, then `fetch` + `complete` until empty. */
const drainPgBoss = async (batch: number): Promise<Measured> => {
  const schema = `bench_pgboss_${suffix}_${runs++}`
  const app = `bench_pgboss_${suffix}_${runs}`
  const boss = new PgBoss({ connectionString: urlFor(app), schema, max: 1, supervise: false, schedule: false })
  boss.on("error", (error) => console.error("pg-boss", error))
  await boss.start()
  const queue = "orders"
  await boss.createQueue(queue)
  for (let first = 0; first < drainRows; first += 1000) {
    await boss.insert(Array.from({ length: Math.min(1000, drainRows - first) }, (_, j) => ({
      name: queue,
      data: { orderId: `o-${first + j}`, amount: first + j, subject: `order-${(first + j) % keys}` }
    })))
  }
  const stop = await startClock(app)
  let events = 0
  for (;;) {
    const jobs = await boss.fetch(queue, { batchSize: batch })
    if (jobs.length === 0) break
    await boss.complete(queue, jobs.map((j) => j.id))
    events += jobs.length
  }
  const measured = await stop()
  await boss.stop({ graceful: false, wait: true })
  await monitor.query(`DROP SCHEMA ${schema} CASCADE`)
  return { ...measured, events }
}

// ---------------------------------------------------------------- append
const Order = Schema.Struct({ orderId: Schema.String, amount: Schema.Number })
const businessTable = (table: string) => `${table}_orders`

const appendBulwark = async (): Promise<Measured> => {
  const table = `bench_append_${suffix}_${runs++}`
  const app = `bench_bappend_${suffix}_${runs}`
  await createTable(table)
  await monitor.query(`CREATE TABLE ${businessTable(table)} (id text PRIMARY KEY, amount int NOT NULL)`)
  const program = Effect.gen(function*() {
    const store = yield* Outbox.make({ table })
    const sql = yield* SqlClient.SqlClient
    const append = Outbox.append(Order)
    const orders = businessTable(table)
    // Opens the pool's connections before the clock starts.
    yield* Effect.forEach(Array.from({ length: producers }), () => sql.withTransaction(sql`SELECT 1`), {
      concurrency: producers,
      discard: true
    })
    const stop = yield* Effect.promise(() => startClock(app))
    yield* Effect.forEach(
      Array.from({ length: producers }, (_, p) => p),
      (p) =>
        Effect.gen(function*() {
          for (let i = p; i < appendTx; i += producers) {
            const event = yield* Envelope.make({
              type: "com.example.order.paid",
              source: "/bench",
              subject: `order-${i % keys}`,
              data: { orderId: `o-${i}`, amount: i }
            })
            yield* sql.withTransaction(Effect.zipRight(
              sql`INSERT INTO ${sql(orders)} (id, amount) VALUES (${`o-${i}`}, ${i})`,
              append("orders", [event])
            ))
          }
        }),
      { concurrency: producers, discard: true }
    ).pipe(Effect.provideService(Outbox.Outbox, Outbox.fromStore(store)))
    const measured = yield* Effect.promise(stop)
    return { ...measured, events: appendTx }
  })
  const result = await Effect.runPromise(
    program.pipe(Effect.provide(Database.layerPostgres({ url: urlFor(app), maxConnections: producers })))
  )
  await monitor.query(`DROP TABLE ${businessTable(table)}`)
  await dropTable(table)
  return result
}

/** The outbox insert exactly as Bulwark sends it (one row, the conditional wake-up), for the hand-written loops. */
const outboxInsert = (table: string) =>
  `WITH inserted AS (INSERT INTO "${table}" (topic, message_id, key, payload, headers)
    VALUES ($3, $4, $5, $6, $7) RETURNING id) SELECT pg_notify($1, $2) WHERE EXISTS (SELECT 1 FROM "${table}_sleepers")`
const encoder = new TextEncoder()
const eventPayload = (id: string, i: number) =>
  encoder.encode(JSON.stringify({
    specversion: "1.0", id, source: "/bench", type: "com.example.order.paid", subject: `order-${i % keys}`,
    time: new Date().toISOString(), datacontenttype: "application/json", data: { orderId: `o-${i}`, amount: i }
  }))

/** `@effect/sql` by hand: the same two statements in `sql.withTransaction`, no Bulwark: what the library costs. */
const appendEffectSql = async (): Promise<Measured> => {
  const table = `bench_append_${suffix}_${runs++}`
  const app = `bench_eappend_${suffix}_${runs}`
  await createTable(table)
  const orders = businessTable(table)
  await monitor.query(`CREATE TABLE ${orders} (id text PRIMARY KEY, amount int NOT NULL)`)
  const insert = outboxInsert(table)
  const program = Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* Effect.forEach(Array.from({ length: producers }), () => sql.withTransaction(sql`SELECT 1`), {
      concurrency: producers,
      discard: true
    })
    const stop = yield* Effect.promise(() => startClock(app))
    yield* Effect.forEach(
      Array.from({ length: producers }, (_, p) => p),
      (p) =>
        Effect.gen(function*() {
          for (let i = p; i < appendTx; i += producers) {
            const id = crypto.randomUUID()
            yield* sql.withTransaction(Effect.zipRight(
              sql`INSERT INTO ${sql(orders)} (id, amount) VALUES (${`o-${i}`}, ${i})`,
              sql.unsafe(insert, [table, "appended", "orders", id, `order-${i % keys}`, Buffer.from(eventPayload(id, i)), "{}"])
            ))
          }
        }),
      { concurrency: producers, discard: true }
    )
    const measured = yield* Effect.promise(stop)
    return { ...measured, events: appendTx }
  })
  const result = await Effect.runPromise(
    program.pipe(Effect.provide(Database.layerPostgres({ url: urlFor(app), maxConnections: producers })))
  )
  await monitor.query(`DROP TABLE ${orders}`)
  await dropTable(table)
  return result
}

/** Raw `pg`: the same two inserts per transaction (the outbox insert is Bulwark's statement text), 8 clients. */
const appendRaw = async (): Promise<Measured> => {
  const table = `bench_append_${suffix}_${runs++}`
  const app = `bench_rappend_${suffix}_${runs}`
  await createTable(table)
  const orders = businessTable(table)
  await monitor.query(`CREATE TABLE ${orders} (id text PRIMARY KEY, amount int NOT NULL)`)
  const clients = await Promise.all(Array.from({ length: producers }, async () => {
    const client = new pg.Client({ connectionString: urlFor(app) })
    await client.connect()
    return client
  }))
  const insert = outboxInsert(table)
  const stop = await startClock(app)
  await Promise.all(clients.map(async (client, p) => {
    for (let i = p; i < appendTx; i += producers) {
      const id = crypto.randomUUID()
      const payload = eventPayload(id, i)
      await client.query("BEGIN")
      await client.query(`INSERT INTO ${orders} (id, amount) VALUES ($1, $2)`, [`o-${i}`, i])
      await client.query(insert, [table, "appended", "orders", id, `order-${i % keys}`, Buffer.from(payload), "{}"])
      await client.query("COMMIT")
    }
  }))
  const measured = await stop()
  await Promise.all(clients.map((c) => c.end()))
  await monitor.query(`DROP TABLE ${orders}`)
  await dropTable(table)
  return { ...measured, events: appendTx }
}

// ---------------------------------------------------------------- run
/** The rows of the parts this run leaves out, from the results file, with a note saying when they were measured. */
const keptRows = (only: ReadonlyArray<string>): { rows: Array<Row>; notes: Array<string> } => {
  const left = ["drain", "append"].filter((part) => !only.includes(part))
  if (left.length === 0) return { rows: [], notes: [] }
  try {
    const previous = JSON.parse(readFileSync(new URL("../../../bench/results/outbox-drain.json", import.meta.url), "utf8"))
    const rows = (previous.rows as Array<Row>).filter((row) => left.some((part) => String(row["scenario"]).startsWith(part)))
    if (rows.length === 0) return { rows: [], notes: [] }
    // Kept by an earlier partial run already: that note names the run that measured them, not the file's date.
    const prefix = `The ${left.join(" and ")} rows are kept from the run of `
    const carried = (previous.notes as Array<string> | undefined)?.find((n) => n.startsWith(prefix))
    // The load of the run that measured them, not the one a kept-rows note of that file quotes.
    const load = String(previous.notes?.find((n: string) => n.includes("Load average") && !n.includes("rows are kept from the run")) ?? "").match(/Load average[^:]*: [^o]*on \d+ cores/)
    const origin = carried !== undefined && carried.includes("; the other rows")
      ? carried.slice(0, carried.indexOf("; the other rows"))
      : `${prefix}${previous.date}${load === null ? "" : ` (${load[0]})`}`
    return {
      rows,
      notes: [`${origin}; the other rows are from this run, measured ${new Date().toISOString()}.`]
    }
  } catch {
    return { rows: [], notes: [] }
  }
}

const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

interface System {
  readonly scenario: string
  readonly name: string
  readonly run: () => Promise<Measured>
  /** The system this one is compared with (its name), for the ratio column. */
  readonly versus?: string
}

/**
 * Each system in a long-lived process of its own (unless `DRAIN_SEPARATE=0`): in one process the systems share
 * the heap, the garbage collector and V8's compiled code, so one system's garbage (a drain keeps its 50,000
 * published messages) and the code another warmed up shape the next one's figures, where a service runs one of
 * them. The child is this file with `DRAIN_SYSTEM` set, started with this process's flags and environment (the
 * loader and conditions that load Bulwark's compiled dist); it runs its system when asked and answers the figures.
 */
const separate = process.env["DRAIN_SEPARATE"] !== "0"
const spawnSystem = (index: number) => {
  const worker = benchWorker<{ readonly measured?: Measured; readonly error?: string }>(fileURLToPath(import.meta.url), {
    DRAIN_SYSTEM: String(index)
  })
  const run = () =>
    worker.request("run").then((answer) => {
      if (answer.error !== undefined) throw new Error(answer.error)
      return answer.measured!
    })
  return { run, stop: worker.stop }
}

/** The child's side: runs system `index` of the same list each time the parent asks. */
const serveSystem = (systems: ReadonlyArray<System>, index: number) =>
  new Promise<void>((resolve) => {
    const system = systems[index]!
    process.on("message", () => {
      system.run().then(
        (measured) => process.send!({ measured }),
        (error: unknown) => process.send!({ error: error instanceof Error ? error.stack ?? error.message : String(error) })
      )
    })
    process.on("disconnect", () => resolve())
  })

export const main = async () => {
  const only = (process.env["DRAIN_ONLY"] ?? "drain,append").split(",")
  const withPgBoss = process.env["DRAIN_PGBOSS"] !== "0"
  const systems: Array<System> = []
  if (only.includes("drain")) {
    for (const batch of (process.env["DRAIN_BATCHES"] ?? "100,1000").split(",").map(Number)) {
      const scenario = `drain ${drainRows} rows, batch ${batch}`
      const raw = "raw pg: SELECT … FOR UPDATE SKIP LOCKED, publish, DELETE, one tx"
      systems.push(
        { scenario, name: "bulwark: Relay.round loop", run: () => drainBulwark(batch), versus: raw },
        { scenario, name: "bulwark partitioned: Relay.round loop", run: () => drainBulwark(batch, true), versus: raw },
        { scenario, name: raw, run: () => drainSelectDelete(batch) },
        { scenario, name: "raw pg: DELETE … RETURNING", run: () => drainDeleteReturning(batch), versus: raw }
      )
      if (withPgBoss) systems.push({ scenario, name: "pg-boss 10: fetch + complete", run: () => drainPgBoss(batch), versus: raw })
    }
  }
  if (only.includes("append")) {
    const scenario = `append: ${producers} producers, business insert + 1 event per tx`
    const raw = "raw pg: BEGIN, same 2 inserts, COMMIT"
    systems.push(
      { scenario, name: "bulwark: sql.withTransaction + Outbox.append", run: appendBulwark, versus: raw },
      { scenario, name: raw, run: appendRaw },
      { scenario, name: "@effect/sql by hand: same 2 statements in sql.withTransaction", run: appendEffectSql, versus: raw }
    )
  }
  const child = process.env["DRAIN_SYSTEM"]
  if (child !== undefined) return serveSystem(systems, Number(child))
  const children = separate ? systems.map((_, i) => spawnSystem(i)) : []
  try {
    if (separate) systems.forEach((system, i) => (systems[i] = { ...system, run: children[i]!.run }))
    await measure(systems, only)
  } finally {
    for (const c of children) c.stop()
  }
}

const measure = async (systems: Array<System>, only: ReadonlyArray<string>) => {
  // Warm-up (JIT, plans, connections), unmeasured.
  for (const system of systems) await system.run()
  const results = systems.map(() => [] as Array<Measured>)
  const loads: Array<number> = []
  for (let round = 0; round < rounds; round++) {
    // Interleaved: a burst of load from elsewhere on the machine hits every system alike.
    for (const [i, system] of systems.entries()) {
      loads.push(os.loadavg()[0]!)
      results[i]!.push(await system.run())
    }
  }
  const rate = (m: Measured) => m.events / m.seconds
  const rates = results.map((rs) => median(rs.map(rate)))
  const rows = systems.map((system, i) => {
    const rs = results[i]!
    const versus = system.versus === undefined
      ? undefined
      : systems.findIndex((s) => s.scenario === system.scenario && s.name === system.versus)
    return {
      scenario: system.scenario,
      system: system.name,
      "events/s": Math.round(rates[i]!),
      "min – max": `${Math.round(Math.min(...rs.map(rate)))} – ${Math.round(Math.max(...rs.map(rate)))}`,
      "vs raw": versus === undefined ? "" : `${(rates[i]! / rates[versus]!).toFixed(2)}×`,
      "Postgres CPU µs/event": median(rs.map((m) => m.pgMicros / m.events)).toFixed(1),
      "node CPU µs/event": median(rs.map((m) => m.nodeMicros / m.events)).toFixed(1)
    }
  })
  // A run of one part (DRAIN_ONLY) keeps the other part's rows from the last full file, saying from when.
  const kept = keptRows(only)
  writeResults("outbox-drain", "Outbox drain and append on PostgreSQL", [...kept.rows, ...rows], [
    ...kept.notes,
    `events/s is the median of ${rounds} rounds; in each round every system runs once, one after another (interleaved), and min – max shows the spread. Load average (1 min) during the rounds: median ${median(loads).toFixed(1)}, min ${Math.min(...loads).toFixed(1)}, max ${Math.max(...loads).toFixed(1)} on ${os.cpus().length} cores: the machine is shared with other work, so absolute figures move between runs; compare systems within one run.`,
    `drain: ${drainRows} rows over ${keys} keys, pre-filled (one INSERT … SELECT, then ANALYZE) before the clock starts, emptied by one relay / loop on one connection; the clock stops when a claim finds nothing. Bulwark is \`Relay.make\` + \`relay.round\` until it claims nothing, over \`Outbox.make\` and the memory transport, with the per-key head check (a key's next row only after the previous one is settled), the commit-order check and leases; "bulwark partitioned" is the same loop over \`Outbox.make({ partitioned: true })\` (one relay holding all partition leases: no row lease and no SQL head check, per-key order kept by the relay's waves, the commit-order check kept). The raw loops have none of them. pg-boss drains the same number of jobs (its own schema, inserted before the clock).`,
    `append: ${appendTx} transactions over ${producers} producers (${producers} pooled connections), each one business-row insert and one event; Bulwark encodes a CloudEvents envelope per event, the hand-written loops JSON.stringify the same shape and run Bulwark's outbox insert text. The @effect/sql loop is what the transaction library costs before Bulwark adds anything (bulwark / that loop = Bulwark's own share). Bulwark sends its insert as a named prepared statement straight on the transaction's driver connection (no statement compiler, no span per statement); the hand-written loops send theirs unnamed, as a plain \`client.query\` does (the business insert is unnamed in every system). Both Effect systems run on \`@bulwark/sql\`'s layer, whose outermost \`withTransaction\` runs \`BEGIN\`, the body and \`COMMIT\` on the reserved connection without \`@effect/sql\`'s \`sql.transaction\` span while no tracer is installed (as here); Bulwark's \`create orders\` span then only gives the row its W3C context. node CPU µs/event is per transaction (one event each). fsync and synchronous_commit on (server defaults).`,
    separate
      ? "Each system runs in a long-lived process of its own (this file, forked with the same loader and conditions, so Bulwark loads from its dist), which runs only that system: in one process the systems shared the heap, the garbage collector and V8's compiled code, where a service runs one of them. Results written before 2026-12-07 20:45 UTC ran every system in one process and do not compare with these. The parent asks one child at a time and only collects the figures."
      : "Every system ran in this one process (DRAIN_SEPARATE=0).",
    "Postgres CPU is the user + system time of the server backends serving the system (by application_name, from /proc/<pid>/stat, 10 ms ticks), per event; node CPU is the CPU time of the process running the system, per event. Both over the measured window only.",
    "Run: `npm run bench -- outbox` (the end-to-end outbox benchmark first, then this one), or this file alone with `npx tsx --conditions=@bulwark/source packages/outbox/bench/drain.ts`; `DRAIN_ONLY=drain|append`, `DRAIN_ROWS`, `APPEND_TX`, `BENCH_ROUNDS`, `DRAIN_PGBOSS=0`, `DRAIN_SEPARATE=0` (every system in one process)."
  ])
}

if (process.argv[1]?.endsWith("drain.ts")) {
  main().then(() => process.exit(0), (error) => {
    console.error(error)
    process.exit(1)
  })
}
