/**
 * The planted-bug catalogue: twelve wrong pipelines, each beside its correct twin. A bug and its twin differ in
 * exactly one choice of {@link Variant} (or the key retention) and are checked under the same scenario
 * generator, so the simulator must tell them apart by behaviour alone.
 */
import type * as Scenario from "../src/Scenario.js"
import * as Simulation from "../src/Simulation.js"
import { pipeline, type Variant } from "./pipeline.js"

/** One anti-pattern and its twin. */
export interface Entry {
  readonly id: string
  /** What is wrong, in one line. */
  readonly bug: string
  /** The invariant(s) expected to catch it. */
  readonly caughtBy: ReadonlyArray<string>
  readonly wrong: Simulation.Simulation
  readonly twin: Simulation.Simulation
}

const policy = { maxDeliveries: 8 }

const entry = (
  id: string,
  bug: string,
  caughtBy: ReadonlyArray<string>,
  workload: Scenario.Config,
  variant: Partial<Variant>,
  world: { readonly retention?: number; readonly downstreamLatency?: number } = {}
): Entry => {
  // The twin keeps the environment (latency) but not the wrong setting (retention).
  const { retention: _, ...environment } = world
  return {
    id,
    bug,
    caughtBy,
    wrong: Simulation.make({ name: `${id} (wrong)`, pipeline: pipeline(variant), workload, world, policy }),
    twin: Simulation.make({ name: `${id} (twin)`, pipeline: pipeline(), workload, world: environment, policy })
  }
}

const only = (weights: Partial<Record<Scenario.FaultKind, number>>): Partial<Record<Scenario.FaultKind, number>> => ({
  drop: 0,
  duplicate: 0,
  delay: 0,
  reorder: 0,
  corrupt: 0,
  replay: 0,
  forge: 0,
  skew: 0,
  outage: 0,
  slow: 0,
  burst: 0,
  evict: 0,
  partial: 0,
  crash: 0,
  ...weights
})

/** The catalogue. */
export const catalogue: ReadonlyArray<Entry> = [
  entry(
    "commit-then-publish",
    "publishes the event right after the database commit instead of through an outbox",
    ["no-committed-unpublished", "liveness"],
    { maxFaults: 4, weights: only({ crash: 1, partial: 1 }) },
    { publishing: "after-commit" }
  ),
  entry(
    "ack-before-processing",
    "acknowledges the delivery before handling it",
    ["no-lost"],
    { maxFaults: 4, weights: only({ crash: 1, drop: 1 }) },
    { ackFirst: true }
  ),
  entry(
    "non-idempotent-consumer",
    "calls the downstream without a stable idempotency key",
    ["no-duplicate-effects"],
    { maxFaults: 4, weights: only({ duplicate: 1, slow: 1, partial: 1, crash: 1 }) },
    { idempotencyKey: false }
  ),
  entry(
    "dedupe-after-effect",
    "writes the dedupe record after the effect, outside its transaction",
    ["no-duplicate-effects"],
    { maxFaults: 4, weights: only({ crash: 1 }) },
    { dedupe: "record-after-effect" }
  ),
  entry(
    "check-then-set",
    "checks the idempotency key, then sets it in a later transaction (a race between concurrent deliveries)",
    ["no-duplicate-effects"],
    { maxFaults: 4, weights: only({ duplicate: 1 }) },
    { dedupe: "check-then-set" }
  ),
  entry(
    "unbounded-retry",
    "retries every failure forever: no dead-letter queue",
    ["retry-within-policy", "liveness"],
    { maxFaults: 2, poisonRate: 0.3, weights: only({ outage: 1 }) },
    { retries: "unbounded" }
  ),
  entry(
    "dlq-loss",
    "acks the failed message, then publishes the dead letter in the background",
    ["no-lost"],
    { maxFaults: 4, poisonRate: 0.4, weights: only({ crash: 1 }) },
    { deadLetter: "ack-then-publish" }
  ),
  entry(
    "short-retention",
    "keeps idempotency keys 1 s although redeliveries and replays arrive for tens of seconds",
    ["no-duplicate-effects"],
    { maxFaults: 4, weights: only({ replay: 1, delay: 1, duplicate: 1, evict: 1 }) },
    {},
    { retention: 1_000 }
  ),
  entry(
    "half-open-stampede",
    "a half-open breaker lets every waiting call through instead of one probe",
    ["half-open-probe-bound"],
    { maxFaults: 3, faultWindow: 5_000, weights: only({ outage: 1, burst: 1 }) },
    { halfOpenProbes: Infinity },
    { downstreamLatency: 200 }
  ),
  entry(
    "retry-without-jitter",
    "retries on a fixed exponential schedule, so clients that failed together retry together",
    ["no-synchronised-retries"],
    { maxFaults: 3, faultWindow: 5_000, weights: only({ outage: 1, burst: 1 }) },
    { jitter: false }
  ),
  entry(
    "relay-out-of-order",
    "the outbox relay publishes a batch sorted by event id (random UUIDs) instead of commit order",
    ["order-per-key"],
    { maxFaults: 2, keys: 2, faultWindow: 5_000, weights: only({ partial: 1 }) },
    { relay: "by-event-id" }
  ),
  entry(
    "reserialising-verifier",
    "verifies the webhook signature over re-serialised JSON instead of the raw bytes",
    ["liveness"],
    { maxFaults: 2, weights: only({ corrupt: 1 }) },
    { verifier: "reserialised" }
  )
]
