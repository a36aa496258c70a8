/**
 * `npm run chaos`: the full chaos run (see test/chaos/driver.ts). 20,000 events over 500 keys through an
 * outbox producer, three relay processes and an idempotent consumer, on a private PostgreSQL and a private NATS
 * JetStream, while relays are SIGKILLed (seven times: five on their own, one during each of two outages) and
 * each server is restarted twice. Writes bench/results/chaos.{json,md}; exits 1 when a target is missed.
 * `npm run chaos -- --small` runs the size `npm test` runs, without writing results.
 */
import * as Driver from "../test/chaos/driver.js"
import { writeResults } from "./lib.js"

const small = process.argv.includes("--small")
const log = (line: string) => console.log(`[chaos ${new Date().toISOString().slice(11, 19)}] ${line}`)

const options: Driver.Options = small
  ? {
    events: 1_500,
    keys: 20,
    batch: 25,
    rate: 100,
    relays: 2,
    faults: [{ kind: "relay" }, { kind: "postgres" }, { kind: "broker", killRelay: true, downMillis: 8_000 }],
    downMillis: 1_000,
    drainTimeoutMillis: 60_000,
    log
  }
  : {
    events: 20_000,
    // A relay claims only the oldest pending row of each key, so few keys cap its throughput (one row per key
    // per round): 500 keys, 40 events each, keep it above the producer's pace on a loaded 2-core machine.
    keys: 500,
    batch: 50,
    rate: 400,
    relays: 3,
    faults: [
      { kind: "relay" },
      { kind: "postgres", killRelay: true, downMillis: 8_000 },
      { kind: "relay" },
      { kind: "broker", killRelay: true, downMillis: 8_000 },
      { kind: "relay" },
      { kind: "postgres" },
      { kind: "relay" },
      { kind: "broker" },
      { kind: "relay" }
    ],
    downMillis: 2_000,
    drainTimeoutMillis: 120_000,
    log
  }

const report = await Driver.run(options)
const drainTarget = 60_000
const met = report.lost === 0 && report.duplicateEffects === 0 && report.reorderings === 0 &&
  report.unexpectedExits.length === 0 && report.processesRunning === report.processes &&
  report.committed === report.events && report.drained && report.drainMillis <= drainTarget
console.log(JSON.stringify(report, null, 2))

if (!small) {
  const rows = [
    { figure: "events committed", target: String(options.events), measured: report.committed },
    { figure: "relay kills (SIGKILL)", target: "≥ 5", measured: report.relayKills },
    { figure: "PostgreSQL restarts (immediate)", target: "2", measured: report.postgresRestarts },
    { figure: "NATS restarts", target: "2", measured: report.brokerRestarts },
    { figure: "lost (committed, never applied)", target: "0", measured: report.lost },
    { figure: "duplicate effects", target: "0", measured: report.duplicateEffects },
    { figure: "per-key reorderings", target: "0", measured: report.reorderings },
    { figure: "per-key reorderings in the NATS stream", target: "0", measured: report.stream.reorderings },
    { figure: "repeated ids in the NATS stream", target: "", measured: report.stream.duplicates },
    { figure: "dead outbox rows", target: "0", measured: report.deadRows },
    { figure: "processes exited by themselves", target: "0", measured: report.unexpectedExits.length },
    { figure: "processes running at the end", target: `${report.processes}`, measured: report.processesRunning },
    { figure: "drain after the last fault (s)", target: "≤ 60", measured: report.drained ? (report.drainMillis / 1000).toFixed(1) : "not drained" },
    { figure: "whole run (s)", target: "", measured: (report.totalMillis / 1000).toFixed(0) }
  ]
  writeResults("chaos", "Chaos: outbox → relays → NATS → idempotent consumer under kills and restarts", rows, [
    `${options.events} events over ${options.keys} keys, ${options.batch} per producer transaction, paced at ~${options.rate}/s; ${options.relays} relay processes, one consumer process (Inbox.process, orderBy subject), one producer process.`,
    "Private PostgreSQL restarted with `pg_ctl stop -m immediate` + start; private NATS 2.9 stopped with SIGTERM + started (NATS 2.9 acknowledges a publish before writing it to its file store, so a SIGKILLed broker may lose acknowledged messages: a broker setting, not something an outbox can repair).",
    `Each server stays down ${options.downMillis / 1000} s per restart, 8 s when a relay is killed during the outage (two of the kills), so the new relay process starts while the server is still away.`,
    "Faults are spread evenly over the production time; drain is measured from the end of the last fault to the last committed event applied.",
    `Targets ${met ? "met" : "NOT met"}.`
  ])
}
process.exit(met ? 0 : 1)
