/**
 * The change-data-capture relay against the polling relay, side by side in one run, rounds interleaved: a
 * pre-filled outbox (`DRAIN_ROWS`, default 50,000 rows over 1,000 keys, appended in transactions of
 * `FILL_TX_ROWS`, default 10) drained at batch 100 and 1000 into the memory transport.
 *
 * - **polling**: `Relay.round` in a loop until a round claims nothing (store and relay as shipped).
 * - **cdc**: `CdcRelay.run`; its slot and publication exist before the fill (created by a first start on the
 *   empty table), so the drain reads the fill from the WAL; the clock runs from the start until every event
 *   is published and the table is empty (rows deleted, as the polling relay deletes them).
 *
 * Both run on a private PostgreSQL (the one CDC needs: `wal_level = logical`), so neither touches the shared
 * server's configuration. Besides events/s it reports Postgres's CPU per event (user + system time of the
 * server processes serving the relay, the walsender included, found by `application_name`).
 */
import { Database } from "@bulwark/sql"
import { Memory, Transport } from "@bulwark/transport"
import { Effect, Fiber, ManagedRuntime } from "effect"
import { readFileSync } from "node:fs"
import os from "node:os"
import pg from "pg"
import { writeResults } from "../../../bench/lib.js"
import * as PrivatePostgres from "../../sql/test/support/PrivatePostgres.js"
import * as CdcRelay from "../src/CdcRelay.js"
import * as Outbox from "../src/Outbox.js"
import * as OutboxStore from "../src/OutboxStore.js"
import * as Relay from "../src/Relay.js"

const drainRows = Number(process.env["DRAIN_ROWS"] ?? 50_000)
const txRows = Number(process.env["FILL_TX_ROWS"] ?? 10)
const rounds = Number(process.env["BENCH_ROUNDS"] ?? 3)
const keys = 1000
let runs = 0

const ticksPerSecond = 100
const backendCpu = (pid: number): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond
  } catch {
    return undefined
  }
}

interface Measured {
  readonly events: number
  readonly seconds: number
  readonly nodeMicros: number
  readonly pgMicros: number
}

export const main = async () => {
  const server = await PrivatePostgres.start({
    settings: { wal_level: "logical", max_wal_senders: "10", max_replication_slots: "10", shared_buffers: "256MB" }
  })
  const urlFor = (app: string) => `${server.url}?application_name=${app}`
  const monitor = new pg.Client({ connectionString: urlFor("bench_monitor") })
  await monitor.connect()
  const backendsOf = async (app: string) =>
    (await monitor.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = $1", [app])).rows.map((r) => r.pid)
  const startClock = async (app: string) => {
    const pids = await backendsOf(app)
    const before = new Map(pids.map((pid) => [pid, backendCpu(pid) ?? 0]))
    const wall = performance.now()
    const cpu = process.cpuUsage()
    return async (events: number): Promise<Measured> => {
      const seconds = (performance.now() - wall) / 1000
      const used = process.cpuUsage(cpu)
      let serverSeconds = 0
      for (const pid of new Set([...pids, ...await backendsOf(app)])) serverSeconds += (backendCpu(pid) ?? 0) - (before.get(pid) ?? 0)
      return { events, seconds, nodeMicros: used.user + used.system, pgMicros: serverSeconds * 1e6 }
    }
  }
  const runtimeFor = (app: string) => ManagedRuntime.make(Database.layerPostgres({ url: urlFor(app), maxConnections: 1 }))
  const createTable = async (table: string) => {
    const runtime = runtimeFor("bench_setup")
    await runtime.runPromise(Effect.asVoid(Outbox.make({ table })))
    await runtime.dispose()
  }
  // Many small transactions, as producers append: the CDC relay gets them as separate commits.
  const fill = async (table: string) => {
    await monitor.query(`DO $$ BEGIN
      FOR t IN 0..${Math.ceil(drainRows / txRows) - 1} LOOP
        INSERT INTO ${table} (topic, message_id, key, payload, headers)
        SELECT 'orders', 'm-' || g, 'order-' || (g % ${keys}),
          convert_to(json_build_object('specversion', '1.0', 'id', gen_random_uuid(), 'source', '/bench',
            'type', 'com.example.order.paid', 'subject', 'order-' || (g % ${keys}), 'time', now(),
            'data', json_build_object('orderId', 'o-' || g, 'amount', g))::text, 'UTF8'),
          '{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}'
        FROM generate_series(t * ${txRows} + 1, least((t + 1) * ${txRows}, ${drainRows})) g;
        COMMIT;
      END LOOP; END $$`)
    await monitor.query(`ANALYZE ${table}`)
    await monitor.query(`CHECKPOINT`)
  }
  const drop = async (table: string) => {
    const runtime = runtimeFor("bench_setup")
    await runtime.runPromise(Outbox.drop(table))
    await runtime.dispose()
    await monitor.query(`DROP TABLE IF EXISTS ${table}_cdc`)
    await monitor.query(`DROP PUBLICATION IF EXISTS ${table}_cdc`)
  }

  const polling = async (batch: number): Promise<Measured> => {
    const table = `bench_cdc_${runs++}`
    const app = `bench_polling_${runs}`
    await createTable(table)
    await fill(table)
    const runtime = runtimeFor(app)
    const result = await runtime.runPromise(Effect.gen(function*() {
      const store = yield* Outbox.make({ table })
      const memory = yield* Memory.make()
      const relay = yield* Relay.make({ batchSize: batch, relayId: "bench" }).pipe(
        Effect.provideService(OutboxStore.OutboxStore, store),
        Effect.provideService(Transport.Publisher, { publish: memory.publish })
      )
      const stop = yield* Effect.promise(() => startClock(app))
      let published = 0
      for (;;) {
        const round = yield* relay.round
        if (round.claimed === 0) break
        published += round.published
      }
      return yield* Effect.promise(() => stop(published))
    }))
    await runtime.dispose()
    await drop(table)
    return result
  }

  const cdc = async (batch: number): Promise<Measured> => {
    const table = `bench_cdc_${runs++}`
    const app = `bench_cdc_${runs}`
    const name = `bench_${runs}`
    await createTable(table)
    const memory = await Effect.runPromise(Memory.make())
    let published = 0
    const publisher = {
      publish: (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) =>
        Effect.map(memory.publish(topic, messages), () => {
          published += messages.length
        })
    }
    const relay = (batchSize: number) =>
      CdcRelay.run({ connection: urlFor(app), table, name, batchSize }).pipe(Effect.provideService(Transport.Publisher, publisher))
    // A first start on the empty table creates the publication and the slot; the fill then goes to the WAL.
    const first = Effect.runFork(relay(batch))
    while ((await monitor.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active`, [`bulwark_cdc_${name}`])).rowCount === 0) {
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await Effect.runPromise(Fiber.interrupt(first))
    await fill(table)
    const stop = await startClock(app)
    const running = Effect.runFork(relay(batch))
    for (;;) {
      if (published >= drainRows && (await monitor.query(`SELECT 1 FROM ${table} LIMIT 1`)).rowCount === 0) break
      await new Promise((resolve) => setTimeout(resolve, published >= drainRows ? 2 : 10))
    }
    const measured = await stop(published)
    await Effect.runPromise(Fiber.interrupt(running))
    await Effect.runPromise(CdcRelay.dropSlot(server.url, name))
    await drop(table)
    return measured
  }

  type Sample = Measured & { readonly system: string; readonly batch: number; readonly load1: number }
  const samples: Array<Sample> = []
  const systems = { polling, cdc } as const
  try {
    for (let round = 0; round < rounds; round++) {
      for (const batch of [100, 1000]) {
        const order = round % 2 === 0 ? (["polling", "cdc"] as const) : (["cdc", "polling"] as const)
        for (const system of order) {
          const load1 = os.loadavg()[0]!
          const m = await systems[system](batch)
          samples.push({ ...m, system, batch, load1 })
          console.log(`${system} batch ${batch}: ${(m.events / m.seconds).toFixed(0)} events/s, pg ${(m.pgMicros / m.events).toFixed(1)} µs/event, load ${load1.toFixed(2)}`)
        }
      }
    }
  } finally {
    await monitor.end()
    await server.destroy()
  }

  const median = (xs: ReadonlyArray<number>) => {
    const s = [...xs].sort((a, b) => a - b)
    return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
  }
  const rows = [100, 1000].flatMap((batch) => {
    const of = (system: string) => samples.filter((s) => s.batch === batch && s.system === system)
    const pollingRate = median(of("polling").map((s) => s.events / s.seconds))
    return (["polling", "cdc"] as const).map((system) => {
      const xs = of(system)
      const rate = median(xs.map((s) => s.events / s.seconds))
      return {
        system: system === "polling" ? "Bulwark `Relay.round` loop (polling)" : "Bulwark `CdcRelay` (pgoutput slot)",
        batch,
        "events/s (median)": Math.round(rate),
        "vs polling": `${(rate / pollingRate).toFixed(2)}×`,
        "Postgres CPU µs/event": median(xs.map((s) => s.pgMicros / s.events)).toFixed(1),
        "Node CPU µs/event": median(xs.map((s) => s.nodeMicros / s.events)).toFixed(1),
        "rounds (events/s)": xs.map((s) => Math.round(s.events / s.seconds)).join(", "),
        "load avg (1 min) per round": xs.map((s) => s.load1.toFixed(2)).join(", ")
      }
    })
  })
  writeResults("outbox-cdc", "Outbox drain: change-data-capture relay vs polling relay", rows, [
    `${drainRows} rows over ${keys} keys, appended in transactions of ${txRows} rows before the clock starts; memory transport; ${rounds} rounds, systems interleaved (order alternating), medians.`,
    "One private PostgreSQL 15 for both (wal_level = logical, fsync off, shared_buffers 256MB), on the same 2 cores as the benchmark.",
    "polling: `Relay.round` until a round claims nothing (claim + mark/delete as shipped). cdc: `CdcRelay.run` from its start (connect, setup, START_REPLICATION) until every event is published and its row deleted; its slot was created on the empty table before the fill.",
    "Postgres CPU counts every server process with the relay's application_name (the walsender's decoding included).",
    "Other work shares the machine; the 1-minute load average at the start of each round is listed. Compare systems within one run."
  ])
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(() => process.exit(0), (error) => {
    console.error(error)
    process.exit(1)
  })
}
