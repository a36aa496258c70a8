/**
 * The chaos suite, small (issue 17; `npm run chaos` runs the full one): 1,500 events from an outbox producer,
 * two relay processes and an idempotent consumer, over a private PostgreSQL and a private NATS JetStream,
 * while a relay is SIGKILLed twice (once while NATS is down, so it restarts into the outage), PostgreSQL is
 * restarted (`-m immediate`) and NATS is restarted. Nothing lost, no effect applied twice, no per-key
 * reordering, and every process still running at the end without a supervisor; once with the relays leasing
 * rows (the default), once leasing partitions of keys. See test/chaos/driver.ts.
 */
import { describe, expect, it } from "vitest"
import * as Driver from "./chaos/driver.js"

describe("chaos: outbox → relays → NATS → idempotent consumer under kills and restarts", () => {
  it.each([
    { mode: "row leases (default)", partitioned: false },
    { mode: "partitioned relays", partitioned: true }
  ])("$mode: loses nothing, applies nothing twice, keeps per-key order, and every process survives", async ({ partitioned }) => {
    const report = await Driver.run({
      events: 1_500,
      keys: 20,
      batch: 25,
      rate: 100,
      relays: 2,
      partitioned,
      faults: [{ kind: "relay" }, { kind: "postgres" }, { kind: "broker", killRelay: true, downMillis: 8_000 }],
      downMillis: 1_000,
      // Generous: the machine may be loaded; the full run reports the real drain time.
      drainTimeoutMillis: 60_000
    })
    // Where a reordering started (the stream, i.e. the relays, or the consumer), for whoever reads a failure.
    if (report.reorderings > 0 || report.lost > 0 || report.duplicateEffects > 0) {
      console.log(JSON.stringify({ stream: report.stream, reorderExamples: report.reorderExamples }, null, 2))
    }
    expect({
      committed: report.committed,
      lost: report.lost,
      duplicateEffects: report.duplicateEffects,
      reorderings: report.reorderings,
      deadRows: report.deadRows,
      unexpectedExits: report.unexpectedExits,
      processesRunning: report.processesRunning,
      drained: report.drained
    }).toEqual({
      committed: 1_500,
      lost: 0,
      duplicateEffects: 0,
      reorderings: 0,
      deadRows: 0,
      unexpectedExits: [],
      processesRunning: report.processes,
      drained: true
    })
    expect(report).toMatchObject({ relayKills: 2, postgresRestarts: 1, brokerRestarts: 1 })
  }, 120_000)
})
