/**
 * Simulations of three bugs users met in `@bulwark/dead-letter`'s replay, kept as regression checks. Each is
 * the reference pipeline with the setting that exposed the bug:
 * - two replayers whose claim lease is shorter than the replay's rate-limit spacing: a claim expired during
 *   the sleep, the second replayer took the entry, and both published it (`replay-once`);
 * - crashes of the drain and the replayer: a drain that crashed after storing a dead letter and before acking
 *   it got the copy again, which put an entry already replayed back to `pending`, and it was replayed again
 *   (`replay-once`); a replayer that crashed between claiming an entry and publishing it left the entry
 *   `replaying`, and filter-based replays only ever look at `pending` ones (`no-transient-dead-letters`);
 * - a broker with JetStream's duplicate window: the republished message had its original id, the broker
 *   dropped it as a duplicate, and the entry was marked replayed anyway (`no-transient-dead-letters`).
 */
import * as Simulation from "../src/Simulation.js"
import { only, policy } from "./catalogue.js"
import { pipeline } from "./pipeline.js"

/** Two replayers, 100 ms claims, 4 replays a second. */
export const replayLeaseExpiry = Simulation.make({
  name: "replay: claim lease shorter than the rate-limit spacing",
  pipeline: pipeline({ replayers: 2, replayRate: 4, claimLease: "100 millis", notify: "none" }),
  workload: { maxFaults: 2, weights: only({ outage: 1 }) },
  policy
})

/** Drains and replayers that crash. */
export const replayCrash = Simulation.make({
  name: "replay: the drain and the replayer crash",
  pipeline: pipeline({ notify: "none" }),
  workload: { maxFaults: 4, weights: only({ outage: 1, crash: 3 }) },
  policy
})

/** A broker that drops a message id it saw within the last two minutes (JetStream's default window). */
export const replayDuplicateWindow = Simulation.make({
  name: "replay: broker duplicate window",
  pipeline: pipeline({ notify: "none" }),
  workload: { maxFaults: 2, weights: only({ outage: 1 }) },
  world: { dedupeWindow: 120_000 },
  policy
})
