/**
 * The wrong-pipeline catalogue: mistakes users make with Bulwark's real packages, each beside its correct
 * twin. A wrong pipeline and its twin differ in exactly one choice of {@link Variant} and are checked under
 * the same scenario generator, so the simulator must tell them apart by behaviour alone.
 */
import type { Duration } from "effect"
import type { Policy } from "../src/History.js"
import * as Invariant from "../src/Invariant.js"
import * as Scenario from "../src/Scenario.js"
import * as Simulation from "../src/Simulation.js"
import { dispatchSchedule, type PartnerRate, pipeline, type Variant } from "./pipeline.js"

/** One wrong pipeline and its twin. */
export interface Entry {
  readonly id: string
  /** What is wrong, in one line. */
  readonly bug: string
  /** The invariant(s) expected to catch it. */
  readonly caughtBy: ReadonlyArray<string>
  readonly wrong: Simulation.Simulation
  readonly twin: Simulation.Simulation
}

/** The policy every catalogue simulation declares. */
export const policy = { maxDeliveries: 8, halfOpenProbes: 1 }

/**
 * The partner's limit in the rate-limited entries: one request a second over both dispatcher processes, a
 * permit not free within 100 ms refused — tight enough that the generated load has permits refused.
 */
export const partnerRate: PartnerRate = { limit: 1, windowMillis: 1_000, maxWaitMillis: 100 }

/** What a pipeline whose dispatchers keep {@link partnerRate} is checked with: the limit and the schedule. */
export const partnerRateChecks: { readonly policy: Partial<Policy>; readonly invariants: ReadonlyArray<Invariant.Invariant> } = {
  policy: {
    ...policy,
    partnerRate: { limit: partnerRate.limit, windowMillis: partnerRate.windowMillis },
    webhookAttempts: dispatchSchedule.length
  },
  invariants: [...Invariant.all, Invariant.partnerRateLimit, Invariant.webhookExhaustedAfterSchedule]
}

/**
 * A dispatch schedule a partner outage outlasts: three attempts within about a second, where the default
 * schedule's six span minutes and no generated outage lasts that long. Under it a correct dispatcher gives
 * deliveries up as exhausted, so what it counts before giving up is judged on real exhaustions.
 */
export const shortSchedule: ReadonlyArray<Duration.DurationInput> = ["0 millis", "300 millis", "600 millis"]

/** What a pipeline whose dispatchers keep {@link shortSchedule} is checked with: the schedule's attempts. */
export const shortScheduleChecks: { readonly policy: Partial<Policy>; readonly invariants: ReadonlyArray<Invariant.Invariant> } = {
  policy: { ...policy, webhookAttempts: shortSchedule.length },
  invariants: [...Invariant.all, Invariant.webhookExhaustedAfterSchedule]
}

/** Only the given fault kinds, at the given weights (every other kind, including any added later, off). */
export const only = (weights: Partial<Record<Scenario.FaultKind, number>>): Partial<Record<Scenario.FaultKind, number>> => ({
  ...Object.fromEntries(Scenario.faultKinds.map((kind) => [kind, 0])),
  ...weights
})

const entry = (
  id: string,
  bug: string,
  caughtBy: ReadonlyArray<string>,
  workload: Scenario.Config,
  variant: Partial<Variant>,
  // The twin's own choices besides the defaults (the wrong pipeline differs from it in `variant` alone), and
  // what both are checked with when not the default policy and invariants.
  base: Partial<Variant> = {},
  checks: { readonly policy: Partial<Policy>; readonly invariants?: ReadonlyArray<Invariant.Invariant> } = { policy }
): Entry => ({
  id,
  bug,
  caughtBy,
  wrong: Simulation.make({ name: `${id} (wrong)`, pipeline: pipeline({ ...base, ...variant }), workload, ...checks }),
  twin: Simulation.make({ name: `${id} (twin)`, pipeline: pipeline(base), workload, ...checks })
})

/** The catalogue. */
export const catalogue: ReadonlyArray<Entry> = [
  entry(
    "commit-then-publish",
    "publishes the ledger's event right after its transaction commits instead of through the outbox",
    ["liveness", "no-lost"],
    { maxFaults: 3, weights: only({ crash: 2, partial: 1 }) },
    { publishing: "after-commit" }
  ),
  entry(
    "check-then-post",
    "checks the ledger's dedupe record before the transaction that posts, so two deliveries both post",
    ["no-duplicate-effects"],
    { maxFaults: 3, weights: only({ duplicate: 2, reorder: 1 }) },
    { ledgerDedupe: "check-then-post" }
  ),
  entry(
    "ack-before-processing",
    "acknowledges the delivery before handling it",
    ["no-lost", "liveness"],
    { maxFaults: 4, weights: only({ crash: 2, outage: 1 }) },
    { ackFirst: true }
  ),
  entry(
    "unstable-idempotency-key",
    "calls the downstream with a key that changes per delivery attempt instead of a stable one",
    ["no-duplicate-effects"],
    { maxFaults: 4, weights: only({ slow: 2, crash: 1 }) },
    { idempotencyKey: false }
  ),
  entry(
    "no-dedupe",
    "no idempotency middleware and no stable downstream key: a redelivery repeats the effect",
    ["no-duplicate-effects"],
    { maxFaults: 4, weights: only({ duplicate: 1, slow: 1, crash: 1 }) },
    { dedupe: "none", idempotencyKey: false }
  ),
  entry(
    "dlq-ack-then-publish",
    "acks the failed message, then publishes its dead letter in the background",
    ["no-lost", "liveness", "no-transient-dead-letters"],
    { maxFaults: 4, poisonRate: 0.4, weights: only({ crash: 2, outage: 1 }) },
    { deadLetter: "ack-then-publish" }
  ),
  entry(
    "unbounded-retry",
    "retries every failure a thousand times: no bound, no dead-letter queue",
    ["call-budget", "retry-within-policy", "outage-call-budget"],
    { maxFaults: 2, weights: only({ outage: 1 }) },
    { retries: "unbounded" }
  ),
  entry(
    "short-retention",
    "keeps idempotency keys 1 s although redeliveries arrive for tens of seconds",
    ["no-duplicate-effects"],
    { maxFaults: 4, weights: only({ delay: 1, duplicate: 1, evict: 1, slow: 1 }) },
    { retention: "1 second", idempotencyKey: false }
  ),
  entry(
    "half-open-stampede",
    "the breaker admits 50 half-open probes where the policy declares one",
    ["half-open-probe-bound"],
    { maxFaults: 3, faultWindow: 5_000, weights: only({ outage: 1, burst: 1 }) },
    { permittedProbes: 50 }
  ),
  entry(
    "retry-without-jitter",
    "retries on a fixed exponential schedule, so clients that failed together retry together",
    ["no-synchronised-retries"],
    { maxFaults: 3, faultWindow: 5_000, weights: only({ outage: 1, burst: 1 }) },
    { jitter: "none" }
  ),
  entry(
    "breaker-per-message",
    "makes a new breaker for every message, so it never sees enough calls to open",
    ["outage-call-budget"],
    // It takes most of the workload to overload the downstream: no interleaving choices, to stay small.
    { maxFaults: 1, maxChoices: 0, maxMessages: 10, faultWindow: 15_000, weights: only({ outage: 1 }) },
    { breaker: "per-message" }
  ),
  entry(
    "everything-permanent",
    "treats every failure as permanent, so an outage dead-letters messages on their first try",
    ["no-instant-dead-letter", "no-transient-dead-letters"],
    { maxFaults: 2, weights: only({ outage: 1, burst: 1 }) },
    { classification: "all-permanent" }
  ),
  entry(
    "no-backoff",
    "retries at once, with no backoff, against a failing dependency",
    ["outage-call-budget", "no-synchronised-retries"],
    { maxFaults: 2, faultWindow: 15_000, weights: only({ outage: 1 }) },
    { backoff: "none" }
  ),
  entry(
    "no-replay",
    "dead letters of an outage are never replayed once it is over",
    ["no-transient-dead-letters"],
    { maxFaults: 2, weights: only({ outage: 1 }) },
    { replay: false }
  ),
  entry(
    "sender-in-consumer",
    "sends the partner's webhook with the in-process Sender inside the queue handler; its retry sleep outlives the visibility timeout",
    ["webhook-delivered-once"],
    { maxFaults: 2, weights: only({ partner: 1 }) },
    { notify: "sender-in-consumer" }
  ),
  entry(
    "reserialising-verifier",
    "verifies the webhook signature over re-serialised JSON instead of the raw bytes",
    ["liveness"],
    { maxFaults: 1, weights: only({ skew: 1 }) },
    { verifier: "reserialised" }
  ),
  entry(
    "partner-limiter-per-process",
    "gives each dispatcher process its own memory limiter for the partner's rate limit, so each keeps the limit and together they exceed it",
    ["partner-rate-limit"],
    { maxFaults: 2, weights: only({ partner: 1, crash: 1 }) },
    { partnerLimiter: "per-process" },
    { partnerRate },
    partnerRateChecks
  )
]
