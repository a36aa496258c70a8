import { describe, expect, it } from "@effect/vitest"
import { only, policy } from "../examples/catalogue.js"
import { pipeline } from "../examples/pipeline.js"
import * as Simulation from "../src/Simulation.js"
import * as Simulator from "../src/Simulator.js"

/**
 * The reference pipeline with the outbox's partitioned mode (relays leasing partitions of keys): two relays,
 * crashes and failing publishes keep every invariant, per-key order included. The mutants catalogue plants
 * bugs in this path (a retrying row not holding back its key; a relay publishing past a failed row).
 */
describe("partitioned outbox in the simulated world", () => {
  for (const [name, workload, relayBatch] of [
    ["failing publishes, one key", { maxFaults: 3, maxMessages: 10, keys: 1, weights: only({ partial: 1 }) }, 10],
    ["crashes and failing publishes", { maxFaults: 4, weights: only({ partial: 2, crash: 1 }) }, 10],
    // Batches of two: a key's rows span several claims, each key's next claim after a failed row or a crash.
    ["batches of two, failing publishes and crashes, two keys", { maxFaults: 4, maxMessages: 10, keys: 2, weights: only({ partial: 2, crash: 1 }) }, 2]
  ] as const) {
    it(`${name}: two relays keep every invariant`, async () => {
      const simulation = Simulation.make({
        name: `partitioned outbox: ${name}`,
        pipeline: pipeline({ relays: 2, relayBatch }),
        workload,
        world: { partitionedOutbox: true },
        policy
      })
      const report = await Simulator.checkAsync(simulation, { runs: 80, seed: 1 })
      expect(report.violations).toEqual([])
      expect(report.valid).toBe(true)
    }, 300_000)
  }
})
