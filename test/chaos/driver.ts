/**
 * The chaos driver: an outbox producer, several relays and an idempotent consumer, each in its own process,
 * over a private PostgreSQL and a private NATS JetStream (never the shared servers), while relays are
 * SIGKILLed and both servers restarted. The driver restarts a killed relay at once, as a deployment restarts
 * a crashed pod; nothing else supervises the processes, which must ride out the restarts by themselves.
 *
 * It answers what it saw: events committed, lost (committed, never applied), duplicate effects (applied twice
 * despite the inbox), per-key reorderings (an event applied after a later one of its key), processes that
 * exited by themselves or are not running at the end, and how long the backlog took to drain after the last
 * fault. Used by `npm run chaos` (the full run, bench/chaos.ts) and test/chaos.test.ts (a small one).
 */
import { Inbox, Outbox } from "@bulwark/outbox"
import { Database } from "@bulwark/sql"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Logger, LogLevel } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { connect as connectNats } from "nats"
import pg from "pg"
import * as PrivatePostgres from "../../packages/sql/test/support/PrivatePostgres.js"
import * as PrivateNats from "../../packages/transport-nats/test/support/PrivateNats.js"
import { batchesTable, type ChildConfig, committedTable, effectsTable, inboxTable, outboxTable } from "./config.js"

/**
 * One fault of the schedule. `killRelay` SIGKILLs a relay while the server is down, so it restarts into the
 * outage; `downMillis` (default `Options.downMillis`) should then outlast a process start.
 */
export type Fault =
  | { readonly kind: "relay" }
  | { readonly kind: "postgres" | "broker"; readonly killRelay?: boolean; readonly downMillis?: number }

/** Settings of a chaos run. */
export interface Options {
  readonly events: number
  readonly keys: number
  /** Events per producer transaction. */
  readonly batch: number
  /** Producer pace, events per second; the faults are spread over the production time. */
  readonly rate: number
  readonly relays: number
  /** The relays lease partitions of keys (`Outbox.make({ partitioned: true })`) instead of rows. Default false. */
  readonly partitioned?: boolean
  readonly faults: ReadonlyArray<Fault>
  /** How long a server stays down in a restart. */
  readonly downMillis: number
  /** How long to wait for the backlog to drain after the last fault before giving up. */
  readonly drainTimeoutMillis: number
  /** Progress lines. */
  readonly log?: (line: string) => void
}

/** A process that ended without being killed by the driver. */
export interface Exit {
  readonly process: string
  readonly code: number | null
  readonly signal: string | null
  readonly stderr: string
}

/** What a chaos run saw. */
export interface Report {
  readonly events: number
  readonly committed: number
  readonly applied: number
  readonly lost: number
  readonly duplicateEffects: number
  readonly reorderings: number
  /** Where a reordering starts: the broker's stream holds a key's events out of order (the relays), or not (the consumer). */
  readonly stream: { readonly messages: number; readonly duplicates: number; readonly reorderings: number }
  /** A few reordered effects: key, the event's number in its key, the highest number applied before it. */
  readonly reorderExamples: ReadonlyArray<string>
  /** The end of the consumer's log (warnings and above). */
  readonly consumerLog?: string
  readonly deadRows: number
  readonly relayKills: number
  readonly postgresRestarts: number
  readonly brokerRestarts: number
  /** Processes the driver had running at the end, and how many of them were still running. */
  readonly processes: number
  readonly processesRunning: number
  readonly unexpectedExits: ReadonlyArray<Exit>
  /** Whether everything committed was applied before `drainTimeoutMillis` ran out. */
  readonly drained: boolean
  /** From the end of the last fault (server back, relay restarted) to the last event applied. */
  readonly drainMillis: number
  readonly totalMillis: number
}

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url))
const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

interface Child {
  readonly name: string
  proc: ChildProcess
  killed: boolean
  stderr: string
  stdout: string
}

/** Runs one chaos scenario; every server and process it starts is stopped by its pid before it returns. */
export const run = async (options: Options): Promise<Report> => {
  const log = options.log ?? (() => undefined)
  const started = Date.now()
  const children = new Map<string, Child>()
  const exits: Array<Exit> = []
  let postgres: PrivatePostgres.PrivatePostgres | undefined
  let nats: PrivateNats.PrivateNats | undefined
  let stopping = false

  const spawnChild = (name: string, script: string, config: ChildConfig): Child => {
    const proc = spawn(process.execPath, ["--conditions=@bulwark/source", "--import", "tsx", here(script), JSON.stringify(config)], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    const child: Child = { name, proc, killed: false, stderr: "", stdout: "" }
    proc.stdout?.on("data", (chunk) => (child.stdout = (child.stdout + String(chunk)).slice(-8_000)))
    proc.stderr?.on("data", (chunk) => (child.stderr = (child.stderr + String(chunk)).slice(-8_000)))
    proc.on("exit", (code, signal) => {
      if (child.killed || stopping) return
      exits.push({ process: name, code, signal, stderr: child.stderr })
      log(`${name} exited by itself (${code ?? signal}); restarting it:\n${child.stderr}`)
      // As a deployment would; the exit stays in the report.
      setTimeout(() => {
        if (!stopping) children.set(name, spawnChild(name, script, config))
      }, 1_000)
    })
    children.set(name, child)
    return child
  }

  const killChild = async (child: Child) => {
    child.killed = true
    if (child.proc.exitCode !== null || child.proc.signalCode !== null) return
    const exited = new Promise((resolve) => child.proc.once("exit", resolve))
    child.proc.kill("SIGKILL")
    await exited
  }

  // One short-lived connection per reading: the server may be restarting, and a pool would keep dead ones.
  const query = async <T extends pg.QueryResultRow>(text: string): Promise<ReadonlyArray<T>> => {
    const client = new pg.Client({ connectionString: postgres!.url, connectionTimeoutMillis: 5_000 })
    client.on("error", () => undefined)
    try {
      await client.connect()
      return (await client.query<T>(text)).rows
    } finally {
      await client.end().catch(() => undefined)
    }
  }
  const count = async (text: string) => Number((await query<{ n: string | number }>(text))[0]?.n ?? 0)
  const tryCount = (text: string) => count(text).catch(() => undefined)

  try {
    ;[postgres, nats] = await Promise.all([PrivatePostgres.start(), PrivateNats.start()])
    log(`private PostgreSQL on ${postgres.port}, private NATS on ${nats.port}`)

    // The tables, before any process starts.
    await Effect.runPromise(Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* Outbox.make({ table: outboxTable })
      yield* Inbox.make({ table: inboxTable })
      yield* sql`CREATE TABLE ${sql(effectsTable)} (applied bigserial PRIMARY KEY, event_id text NOT NULL, key text NOT NULL, seq int NOT NULL,
        attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`
      yield* sql`CREATE TABLE ${sql(batchesTable)} (batch int PRIMARY KEY)`
      yield* sql`CREATE TABLE ${sql(committedTable)} (event_id text PRIMARY KEY)`
    }).pipe(
      Effect.provide(Database.layerPostgres({ url: postgres.url, maxConnections: 2 })),
      Effect.scoped,
      Logger.withMinimumLogLevel(LogLevel.Warning)
    ))

    const base = { pgUrl: postgres.url, natsUrl: nats.url, prefix: "chaos" }
    let generation = 0
    const relayConfig = (slot: number): ChildConfig => ({
      ...base,
      relayId: `relay-${slot}-${generation++}`,
      partitioned: options.partitioned === true
    })
    spawnChild("consumer", "./consumer.ts", base)
    for (let slot = 0; slot < options.relays; slot++) spawnChild(`relay-${slot}`, "./relay.ts", relayConfig(slot))
    spawnChild("producer", "./producer.ts", { ...base, events: options.events, keys: options.keys, batch: options.batch, rate: options.rate })

    // The faults are spread over the production time, counted from the first committed event.
    const firstCommit = Date.now() + 120_000
    while ((await tryCount(`SELECT count(*) AS n FROM ${committedTable}`) ?? 0) === 0) {
      if (Date.now() > firstCommit) throw new Error("the producer committed nothing within 120 s")
      await sleep(100)
    }
    const productionMillis = (options.events / options.rate) * 1000
    const t0 = Date.now()
    log(`producing ${options.events} events at ~${options.rate}/s; ${options.faults.length} faults over ${Math.round(productionMillis / 1000)} s`)

    let relayKills = 0
    let postgresRestarts = 0
    let brokerRestarts = 0
    let nextSlot = 0
    const killRelay = async () => {
      const slot = nextSlot++ % options.relays
      const child = children.get(`relay-${slot}`)!
      await killChild(child)
      relayKills++
      spawnChild(`relay-${slot}`, "./relay.ts", relayConfig(slot))
    }

    for (const [i, fault] of options.faults.entries()) {
      const at = t0 + ((i + 1) * productionMillis) / (options.faults.length + 1)
      if (at > Date.now()) await sleep(at - Date.now())
      const applied = await tryCount(`SELECT count(*) AS n FROM ${effectsTable}`)
      const pending = await tryCount(`SELECT count(*) AS n FROM ${outboxTable} WHERE state = 'pending'`)
      log(`fault ${i + 1}: ${fault.kind}${"killRelay" in fault && fault.killRelay ? " (+ relay kill while down)" : ""} at ${((Date.now() - t0) / 1000).toFixed(1)} s; applied so far ${applied ?? "?"}, outbox pending ${pending ?? "?"}`)
      if (fault.kind === "relay") {
        await killRelay()
      } else if (fault.kind === "postgres") {
        await postgres.stop("immediate")
        if (fault.killRelay) await killRelay()
        await sleep(fault.downMillis ?? options.downMillis)
        await postgres.start()
        postgresRestarts++
      } else {
        await nats.stop()
        if (fault.killRelay) await killRelay()
        await sleep(fault.downMillis ?? options.downMillis)
        await nats.start()
        brokerRestarts++
      }
    }
    const lastFault = Date.now()
    log(`last fault over at ${((lastFault - t0) / 1000).toFixed(1)} s; waiting for the backlog to drain`)

    // Drained: the producer is done, and every committed event has been applied.
    let drained = false
    let drainedAt = lastFault
    let lastProgress = 0
    while (Date.now() - lastFault < options.drainTimeoutMillis) {
      const produced = children.get("producer")?.stdout.includes("produced") ?? false
      const committed = await tryCount(`SELECT count(*) AS n FROM ${committedTable}`)
      const applied = await tryCount(`SELECT count(DISTINCT event_id) AS n FROM ${effectsTable}`)
      if (produced && committed === options.events && applied !== undefined && applied >= committed) {
        drained = true
        drainedAt = Date.now()
        break
      }
      if (Date.now() - lastProgress > 5_000) {
        lastProgress = Date.now()
        const pending = await tryCount(`SELECT count(*) AS n FROM ${outboxTable} WHERE state = 'pending'`)
        log(`  committed ${committed ?? "?"}, outbox pending ${pending ?? "?"}, applied ${applied ?? "?"}`)
      }
      await sleep(200)
    }
    log(drained ? `drained ${((drainedAt - lastFault) / 1000).toFixed(1)} s after the last fault` : "not drained in time")

    // Let late duplicates show up before counting.
    await sleep(2_000)
    const processes = [...children.values()]
    const processesRunning = processes.filter((c) => c.proc.exitCode === null && c.proc.signalCode === null).length
    const committed = await count(`SELECT count(*) AS n FROM ${committedTable}`)
    const applied = await count(`SELECT count(DISTINCT event_id) AS n FROM ${effectsTable}`)
    const lost = await count(
      `SELECT count(*) AS n FROM ${committedTable} c WHERE NOT EXISTS (SELECT 1 FROM ${effectsTable} e WHERE e.event_id = c.event_id)`
    )
    const duplicateEffects = await count(
      `SELECT coalesce(sum(c - 1), 0) AS n FROM (SELECT count(*) AS c FROM ${effectsTable} GROUP BY event_id) t`
    )
    const reorderings = await count(`SELECT count(*) AS n FROM (
      SELECT seq, max(seq) OVER (PARTITION BY key ORDER BY applied ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
      FROM ${effectsTable}) t WHERE seq < before`)
    const reorderExamples = (await query<{ key: string; seq: number; before: number; applied: string; attempt: number; at: Date }>(`SELECT * FROM (
      SELECT key, seq, applied, attempt, at, max(seq) OVER (PARTITION BY key ORDER BY applied ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
      FROM ${effectsTable}) t WHERE seq < before ORDER BY applied LIMIT 5`))
      .map((r) => `${r.key}: #${r.seq} (delivery attempt ${r.attempt}) applied at ${((r.at.getTime() - t0) / 1000).toFixed(1)} s (effect ${r.applied}) after #${r.before}`)
    const deadRows = await count(`SELECT count(*) AS n FROM ${outboxTable} WHERE state = 'dead'`)
    const stream = await readStream(nats.url, options.keys)
    return {
      events: options.events,
      committed,
      applied,
      lost,
      duplicateEffects,
      reorderings,
      stream,
      reorderExamples,
      consumerLog: `${children.get("consumer")?.stdout ?? ""}${children.get("consumer")?.stderr ?? ""}`,
      deadRows,
      relayKills,
      postgresRestarts,
      brokerRestarts,
      processes: processes.length,
      processesRunning,
      unexpectedExits: exits,
      drained,
      drainMillis: drainedAt - lastFault,
      totalMillis: Date.now() - started
    }
  } finally {
    stopping = true
    await Promise.all([...children.values()].map(killChild))
    await Promise.all([nats?.destroy(), postgres?.destroy()])
  }
}

/** Reads the whole stream in order: how many messages, repeated ids, and per-key reorderings among first copies. */
const readStream = async (url: string, keys: number) => {
  const nc = await connectNats({ servers: url })
  try {
    const js = nc.jetstream()
    const jsm = await nc.jetstreamManager()
    const name = "chaos_chaos"
    const last = (await jsm.streams.info(name)).state.last_seq
    const consumer = await js.consumers.get(name)
    const seen = new Set<string>()
    const highest = new Map<number, number>()
    let messages = 0
    let duplicates = 0
    let reorderings = 0
    let position = 0
    while (position < last) {
      const batch = await consumer.fetch({ max_messages: 500, expires: 2_000 })
      for await (const msg of batch) {
        position = msg.seq
        messages++
        const id = msg.headers?.get("Nats-Msg-Id") ?? ""
        if (seen.has(id)) {
          duplicates++
          continue
        }
        seen.add(id)
        const n = Number(id.slice(2))
        const key = n % keys
        const seq = Math.floor(n / keys)
        if (seq < (highest.get(key) ?? -1)) reorderings++
        highest.set(key, Math.max(seq, highest.get(key) ?? -1))
      }
    }
    return { messages, duplicates, reorderings }
  } finally {
    await nc.close()
  }
}
