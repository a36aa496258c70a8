/**
 * Outbox throughput on the real Postgres, end to end: a producer appends one event per transaction, a relay
 * claims, publishes and marks; the clock stops when every event is published.
 *
 * - bulwark: `Outbox.append` in `sql.withTransaction` → `Relay` → the memory transport.
 * - raw pg: the same SQL statements in a hand-written `pg` loop with the same pool size, batch size and relay
 *   policy (linger, sleeper registration): the limit.
 * - pg-boss 10: `send` per event → `fetch({ batchSize })` → `complete(ids)`.
 * - @effect/sql by hand: the raw loop's statements and policy, each statement through `@effect/sql` (the
 *   producers' in `sql.withTransaction`), to show what the transaction library itself costs.
 *
 * The drain of a pre-filled outbox and the append inside the caller's transaction, each against hand-written
 * `pg` loops, are in `./drain.ts`, run after this one (`OUTBOX_BENCH` picks one).
 *
 * Each scenario runs `rounds` times, the systems interleaved, and reports the median: on a small shared
 * machine single runs vary by tens of percent. Node CPU time per event is reported too, since Postgres
 * and the benchmark share the cores and the client's CPU cost shows up directly in throughput.
 */
import { Envelope } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import { Memory, Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer, ManagedRuntime, Schema } from "effect"
import pg from "pg"
import PgBoss from "pg-boss"
import { writeResults } from "../../../bench/lib.js"
import * as Outbox from "../src/Outbox.js"
import * as OutboxStore from "../src/OutboxStore.js"
import * as Relay from "../src/Relay.js"

const url = process.env["BULWARK_BENCH_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const singles = Number(process.env["BENCH_EVENTS"] ?? 3_000)
const batched = Number(process.env["BENCH_BATCHED_EVENTS"] ?? 15_000)
const batchPerTx = 10
const lingerMillis = 10
const producers = 8
const relayBatch = 500
const keys = 1000
const poolSize = 10
const rounds = Number(process.env["BENCH_ROUNDS"] ?? 5)
const suffix = `${Date.now().toString(36)}${process.pid}`
let runs = 0

/** Starts a clock for the measured window: wall time and this process's CPU time (user + system, all threads). */
const startClock = () => {
  const wall = performance.now()
  const cpu = process.cpuUsage()
  return () => {
    const used = process.cpuUsage(cpu)
    return { seconds: (performance.now() - wall) / 1000, cpuMicros: used.user + used.system }
  }
}

const Order = Schema.Struct({ orderId: Schema.String, amount: Schema.Number })

/** How appends wake the relay: the default (only while it sleeps), or every appending transaction. */
type Notify = true | "always"

// ---------------------------------------------------------------- bulwark
const runBulwark = async (count: number, perTx: number, notify: Notify) => {
  const table = `bench_outbox_${suffix}_${count}_${perTx}_${notify}_${runs++}`
  // The same pool size as the raw loop; LISTEN (the relay's and `drained`'s) shares one extra connection
  // that @effect/sql-pg opens outside the pool.
  const database = Database.layerPostgres({ url, maxConnections: poolSize })
  const program = Effect.gen(function*() {
    const outbox = yield* Outbox.make({ table, notify })
    const memory = yield* Memory.make()
    const transport = Layer.succeed(Transport.Publisher, { publish: memory.publish })
    const measured = yield* Effect.scoped(Effect.gen(function*() {
      yield* Layer.launch(Relay.layer({ batchSize: relayBatch, linger: lingerMillis })).pipe(
        Effect.provideService(OutboxStore.OutboxStore, outbox),
        Effect.provide(transport),
        Effect.forkScoped
      )
      const sql = yield* SqlClient.SqlClient
      const append = Outbox.append(Order)
      const stop = startClock()
      yield* Effect.forEach(
        Array.from({ length: producers }, (_, p) => p),
        (p) =>
          Effect.gen(function*() {
            for (let first = p * perTx; first < count; first += producers * perTx) {
              const envelopes = yield* Effect.forEach(
                Array.from({ length: Math.min(perTx, count - first) }, (_, j) => first + j),
                (i) =>
                  Envelope.make({
                    type: "com.example.order.paid",
                    source: "/bench",
                    subject: `order-${i % keys}`,
                    data: { orderId: `o-${i}`, amount: i }
                  })
              )
              yield* sql.withTransaction(append("orders", envelopes))
            }
          }),
        { concurrency: producers, discard: true }
      ).pipe(Effect.provideService(Outbox.Outbox, outbox))
      yield* outbox.drained
      return stop()
    }))
    const published = memory.pending("orders")
    yield* Outbox.drop(table)
    return { ...measured, published }
  })
  return Effect.runPromise(program.pipe(Effect.provide(database)))
}

// ---------------------------------------------------------------- the same SQL, by hand
/** The outbox's statements for one table, as the hand-written loops run them. */
const sameSql = (table: string, notify: Notify) => {
  const sleepers = `${table}_sleepers`
  const values = (rows: number) =>
    Array.from({ length: rows }, (_, r) => {
      const p = 3 + r * 5
      return `($${p}, $${p + 1}, $${p + 2}, $${p + 3}, $${p + 4})`
    }).join(", ")
  const insert = (rows: number) => {
    const wakeAll = `WITH inserted AS (INSERT INTO ${table} (topic, message_id, key, payload, headers) VALUES ${values(rows)} RETURNING id)
      SELECT pg_notify($1, $2)`
    return notify === "always" ? wakeAll : `${wakeAll} WHERE EXISTS (SELECT 1 FROM ${sleepers})`
  }
  return {
    create: [
      `CREATE TABLE ${table} (
        id bigserial PRIMARY KEY, topic text NOT NULL, message_id text NOT NULL, key text NOT NULL, payload bytea NOT NULL,
        headers text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), attempts integer NOT NULL DEFAULT 0,
        state text NOT NULL DEFAULT 'pending', available_at timestamptz NOT NULL DEFAULT now(), claimed_by text,
        claimed_until timestamptz, published_at timestamptz, last_error text, dead_letter_published boolean,
        appended_at timestamptz DEFAULT clock_timestamp())`,
      `CREATE INDEX ${table}_pending ON ${table} (id) WHERE state = 'pending'`,
      `CREATE INDEX ${table}_pending_key ON ${table} (key, id) WHERE state = 'pending'`,
      `CREATE INDEX ${table}_published ON ${table} (published_at) WHERE state = 'published'`,
      `CREATE TABLE ${sleepers} (relay_id text PRIMARY KEY, since timestamptz NOT NULL DEFAULT now())`
    ],
    drop: [`DROP TABLE ${table}`, `DROP TABLE ${sleepers}`],
    claim: `WITH claimed AS (UPDATE ${table} SET claimed_by = $1, claimed_until = now() + ($2::float8 * interval '1 millisecond')
      WHERE id = ANY(ARRAY(SELECT c.id FROM ${table} c WHERE c.state = 'pending' AND c.available_at <= now()
        AND (c.claimed_until IS NULL OR c.claimed_until < now())
        AND (c.key = '' OR ((c.appended_at IS NULL OR c.appended_at < coalesce((SELECT min(a.xact_start)
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'relation'
              AND l.relation = '${table}'::regclass AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid()), 'infinity')
            OR c.created_at < now() - interval '5 seconds')
          AND NOT EXISTS (SELECT 1 FROM ${table} p WHERE p.state = 'pending' AND p.key = c.key AND p.id < c.id)))
        ORDER BY c.id LIMIT $3 FOR UPDATE SKIP LOCKED))
      RETURNING id, topic, message_id, key, payload, headers, attempts)
      SELECT claimed.*, set_config('synchronous_commit', 'off', true) AS async_commit FROM claimed`,
    mark: `WITH marked AS (DELETE FROM ${table} WHERE id = ANY($1::bigint[]) AND claimed_by = $2 RETURNING id)
      SELECT pg_notify($3, count(*)::text), set_config('synchronous_commit', 'off', true) FROM marked`,
    register: `INSERT INTO ${sleepers} (relay_id) VALUES ($1) ON CONFLICT (relay_id) DO UPDATE SET since = now()`,
    deregister: `DELETE FROM ${sleepers} WHERE relay_id = $1`,
    insert
  }
}

/** How a hand-written loop reaches Postgres: a relay statement, and a producer's one-statement transaction. */
interface Executor {
  readonly query: (text: string, params: ReadonlyArray<unknown>) => Promise<ReadonlyArray<Record<string, any>>>
  readonly transaction: (producer: number, text: string, params: ReadonlyArray<unknown>) => Promise<unknown>
}

/**
 * The outbox's work written by hand over `executor`: the same statements, and the relay policy `Relay.run`
 * has (linger after a partial batch; when a claim finds nothing, register as asleep in the default mode and
 * claim once more; deregister after two busy rounds). It does not LISTEN: an empty claim waits 2 ms instead,
 * a stand-in for a notification that costs the loop nothing.
 */
const runSameSql = async (executor: Executor, table: string, count: number, perTx: number, notify: Notify) => {
  const text = sameSql(table, notify)
  for (const statement of text.create) await executor.query(statement, [])
  const sink: Array<unknown> = []
  let published = 0
  const pause = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))
  const stop = startClock()
  const relay = (async () => {
    let asleep = false
    let busyRounds = 0
    while (published < count) {
      const rows = [...await executor.query(text.claim, ["hand", 30_000, relayBatch])]
      if (rows.length === 0) {
        busyRounds = 0
        if (notify === true && !asleep) {
          await executor.query(text.register, ["hand"])
          asleep = true
          continue
        }
        await pause(2)
        continue
      }
      rows.sort((a, b) => Number(a.id) - Number(b.id))
      for (const row of rows) sink.push({ id: row.message_id, key: row.key, payload: row.payload, headers: JSON.parse(row.headers) })
      await executor.query(text.mark, [rows.map((r) => r.id), "hand", `${table}_settled`])
      published += rows.length
      if (asleep && ++busyRounds >= 2) {
        await executor.query(text.deregister, ["hand"])
        asleep = false
      }
      if (rows.length < relayBatch && published < count) await pause(lingerMillis)
    }
  })()
  const encoder = new TextEncoder()
  await Promise.all(Array.from({ length: producers }, async (_, p) => {
    for (let first = p * perTx; first < count; first += producers * perTx) {
      const params: Array<unknown> = [table, "appended"]
      const rows = Math.min(perTx, count - first)
      for (let i = first; i < first + rows; i++) {
        const payload = encoder.encode(JSON.stringify({
          specversion: "1.0", id: crypto.randomUUID(), source: "/bench", type: "com.example.order.paid",
          time: new Date().toISOString(), datacontenttype: "application/json", data: { orderId: `o-${i}`, amount: i },
          subject: `order-${i % keys}`, bulwarkattempt: 0
        }))
        params.push("orders", `m-${i}`, `order-${i % keys}`, Buffer.from(payload), "{}")
      }
      await executor.transaction(p, text.insert(rows), params)
    }
  }))
  await relay
  const measured = stop()
  for (const statement of text.drop) await executor.query(statement, [])
  return { ...measured, published: sink.length }
}

// ---------------------------------------------------------------- raw pg
const runRaw = async (count: number, perTx: number, notify: Notify) => {
  const pool = new pg.Pool({ connectionString: url, max: poolSize })
  // Each producer and the relay hold one client for the whole run, as a hand-tuned loop would.
  const clients = await Promise.all(Array.from({ length: producers + 1 }, () => pool.connect()))
  const relayClient = clients[producers]!
  try {
    return await runSameSql({
      query: async (text, params) => (await relayClient.query(text, params as Array<unknown>)).rows,
      transaction: async (producer, text, params) => {
        const client = clients[producer]!
        await client.query("BEGIN")
        await client.query(text, params as Array<unknown>)
        await client.query("COMMIT")
      }
    }, `bench_raw_${suffix}_${count}_${perTx}_${notify}_${runs++}`, count, perTx, notify)
  } finally {
    for (const client of clients) client.release()
    await pool.end()
  }
}

// ---------------------------------------------------------------- @effect/sql by hand
const runEffectSql = async (count: number, perTx: number, notify: Notify) => {
  const runtime = ManagedRuntime.make(Database.layerPostgres({ url, maxConnections: poolSize }))
  const sql = await runtime.runPromise(SqlClient.SqlClient)
  try {
    return await runSameSql({
      query: (text, params) => runtime.runPromise(sql.unsafe<Record<string, any>>(text, params)),
      transaction: (_, text, params) => runtime.runPromise(sql.withTransaction(sql.unsafe(text, params)))
    }, `bench_esql_${suffix}_${count}_${perTx}_${notify}_${runs++}`, count, perTx, notify)
  } finally {
    await runtime.dispose()
  }
}

// ---------------------------------------------------------------- pg-boss
const runPgBoss = async (count: number, perTx: number) => {
  const schema = `bench_pgboss_${suffix}_${count}_${perTx}_${runs++}`
  const boss = new PgBoss({ connectionString: url, schema, max: poolSize, supervise: false, schedule: false })
  boss.on("error", (error) => console.error("pg-boss", error))
  await boss.start()
  const queue = "orders"
  await boss.createQueue(queue)
  let completed = 0
  let producing = true
  const stop = startClock()
  const worker = (async () => {
    while (completed < count) {
      const jobs = await boss.fetch<{ orderId: string }>(queue, { batchSize: relayBatch })
      if (jobs.length === 0) {
        await new Promise((resolve) => setTimeout(resolve, producing ? 2 : 0))
        continue
      }
      await boss.complete(queue, jobs.map((j) => j.id))
      completed += jobs.length
    }
  })()
  await Promise.all(Array.from({ length: producers }, async (_, p) => {
    for (let first = p * perTx; first < count; first += producers * perTx) {
      const data = (i: number) => ({ orderId: `o-${i}`, amount: i, subject: `order-${i % keys}` })
      if (perTx === 1) await boss.send(queue, data(first))
      else {
        // pg-boss's batch API: one multi-row insert, like the outbox's append of several envelopes.
        await boss.insert(Array.from({ length: Math.min(perTx, count - first) }, (_, j) => ({ name: queue, data: data(first + j) })))
      }
    }
  }))
  producing = false
  await worker
  const measured = stop()
  await boss.stop({ graceful: false, wait: true })
  const pool = new pg.Pool({ connectionString: url, max: 1 })
  await pool.query(`DROP SCHEMA ${schema} CASCADE`)
  await pool.end()
  return { ...measured, published: completed }
}

// ---------------------------------------------------------------- run
const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** Runs one system; its wall and CPU time cover the measured window only (set-up and tear-down excluded). */
const measure = async (count: number, run: () => Promise<{ seconds: number; cpuMicros: number; published: number }>) => {
  const result = await run()
  return { ...result, cpuMicrosPerEvent: result.cpuMicros / count }
}

const main = async () => {
  // Measured runs should show a relay and its producers as they run for hours, not while V8 still compiles
  // them: the Effect path spends several times its steady CPU per event over its first few thousand
  // transactions (much of it on V8's compiler threads). Every system warms up at both shapes.
  const warmup = Number(process.env["BENCH_WARMUP"] ?? 6_000)
  for (const perTx of [1, batchPerTx]) {
    await runBulwark(warmup, perTx, true)
    await runRaw(warmup, perTx, true)
    await runPgBoss(warmup, perTx)
    await runEffectSql(warmup, perTx, true)
  }
  const rows: Array<Record<string, string | number>> = []
  const notes: Array<string> = []
  for (const [count, perTx] of [[singles, 1], [batched, batchPerTx]] as const) {
    const systems = [
      { name: "bulwark: append in tx → relay → memory transport", run: () => runBulwark(count, perTx, true) },
      { name: "raw pg loop (same SQL)", run: () => runRaw(count, perTx, true) },
      { name: "bulwark, notify: \"always\"", run: () => runBulwark(count, perTx, "always") },
      { name: "raw pg loop, NOTIFY in every append (same SQL)", run: () => runRaw(count, perTx, "always") },
      { name: `pg-boss 10 ${perTx === 1 ? "send" : "insert(batch)"} → fetch → complete`, run: () => runPgBoss(count, perTx) },
      { name: "@effect/sql loop (same SQL and relay policy, by hand)", run: () => runEffectSql(count, perTx, true) }
    ]
    const results = systems.map(() => [] as Array<{ seconds: number; cpuMicrosPerEvent: number }>)
    // Interleaved, so a burst of load from elsewhere on the machine hits every system alike.
    for (let round = 0; round < rounds; round++) {
      for (const [i, system] of systems.entries()) {
        const result = await measure(count, system.run)
        if (result.published !== count) throw new Error(`${system.name} published ${result.published} of ${count}`)
        results[i]!.push(result)
      }
    }
    const rate = results.map((rs) => median(rs.map((r) => count / r.seconds)))
    const scenario = `${perTx} event${perTx === 1 ? "" : "s"}/tx`
    for (const [i, system] of systems.entries()) {
      const rs = results[i]!
      rows.push({
        scenario,
        system: system.name,
        events: count,
        "events/s": Math.round(rate[i]!),
        "min – max events/s": `${Math.round(Math.min(...rs.map((r) => count / r.seconds)))} – ${Math.round(Math.max(...rs.map((r) => count / r.seconds)))}`,
        "node CPU µs/event": Math.round(median(rs.map((r) => r.cpuMicrosPerEvent)))
      })
    }
    const [b, r, ba, ra, p, e] = rate as [number, number, number, number, number, number]
    notes.push(`${scenario}, defaults: bulwark / raw = ${(b / r * 100).toFixed(0)}% (goal ≥ 80%); bulwark / pg-boss = ${(b / p).toFixed(2)}× (goal ≥ 2×); raw / pg-boss = ${(r / p).toFixed(2)}×.`)
    notes.push(`${scenario}, notify: "always": bulwark / raw = ${(ba / ra * 100).toFixed(0)}%; bulwark / pg-boss = ${(ba / p).toFixed(2)}×.`)
    notes.push(`${scenario}: bulwark / the same loop through @effect/sql = ${(b / e * 100).toFixed(0)}%; that loop / raw = ${(e / r * 100).toFixed(0)}%.`)
  }
  writeResults("outbox", "Outbox end to end on PostgreSQL", rows, [
    ...notes,
    `events/s is the median of ${rounds} runs per system, the systems interleaved; min – max shows the spread. node CPU is this process's CPU time (user + system, all threads) per event over the measured window (set-up and tear-down excluded), the relay and the producers together; Postgres's is not included.`,
    `${producers} concurrent producers, ${keys} distinct subjects (per-key order on), pool of ${poolSize} connections for each system (bulwark's LISTEN uses one more, outside the pool), fsync and synchronous_commit on (server defaults).`,
    `Relay / fetch batch size ${relayBatch}, linger ${lingerMillis} ms; one relay (one pg-boss fetch loop). Clock runs from the first append until the last event is published (bulwark: \`Outbox.drained\`).`,
    `Every system first runs ${warmup} events at each shape, unmeasured (JIT warm-up); pg-boss schema and queue are created before its clock starts.`,
    "Relay claim/mark statements commit with synchronous_commit = off (appends stay durable); the raw loop uses the same statements, including the append's conditional NOTIFY, the sleeper registration and the settle notification in the mark.",
    "The @effect/sql loop is the raw loop's code with each statement run through @effect/sql (`sql.unsafe`; the producers' in `sql.withTransaction`, one connection per transaction from the pool) from a ManagedRuntime: what the transaction library costs before Bulwark adds anything.",
    "Postgres and the benchmark share 2 cores, and other work on the machine, when there is any, moves absolute figures a lot between runs; compare systems within one run."
  ])
}

// `OUTBOX_BENCH=e2e` runs only the end-to-end benchmark above, `drain` only the drain and append one
// (`./drain.ts`, written to bench/results/outbox-drain.md); by default both, one after the other.
const which = process.env["OUTBOX_BENCH"] ?? "all"
const runBoth = async () => {
  if (which !== "drain" && which !== "cdc") await main()
  if (which !== "e2e" && which !== "cdc") await (await import("./drain.js")).main()
  // The CDC relay against the polling relay (`./cdc.ts`, bench/results/outbox-cdc.md): `OUTBOX_BENCH=cdc` alone.
  if (which === "all" || which === "cdc") await (await import("./cdc.js")).main()
}

runBoth().then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
