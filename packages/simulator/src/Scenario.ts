/**
 * A whole simulated run as plain generated data — workload, faults and interleaving — so that fast-check
 * shrinks all three together to a minimal counterexample.
 */
import * as fc from "fast-check"

/** One business message a simulated webhook sender delivers. */
export interface WorkItem {
  /** Ordering key index (the envelope subject is `k<key>`). */
  readonly key: number
  readonly amount: number
  /** Virtual ms at which the sender first sends it. */
  readonly at: number
  /** The sender's JSON has insignificant whitespace (valid JSON, different bytes from a re-serialisation). */
  readonly spaced: boolean
  /** The downstream rejects it permanently: it must end dead-lettered, not retried forever. */
  readonly poison: boolean
}

/** One injected fault. `nth` counts occurrences of the fault's site (0 = the first). */
export type Fault =
  | { readonly kind: "drop"; readonly nth: number }
  | { readonly kind: "duplicate"; readonly nth: number; readonly copies: number }
  | { readonly kind: "delay"; readonly nth: number; readonly ms: number }
  | { readonly kind: "reorder"; readonly nth: number }
  | { readonly kind: "corrupt"; readonly nth: number }
  | { readonly kind: "replay"; readonly nth: number; readonly after: number }
  | { readonly kind: "forge"; readonly at: number }
  | { readonly kind: "skew"; readonly at: number; readonly ms: number }
  | { readonly kind: "outage"; readonly at: number; readonly ms: number }
  | { readonly kind: "slow"; readonly nth: number; readonly ms: number }
  | { readonly kind: "burst"; readonly at: number; readonly count: number }
  | { readonly kind: "evict"; readonly at: number }
  | { readonly kind: "partial"; readonly nth: number; readonly accepted: number }
  /** The webhook partner (the endpoint the dispatcher delivers to) answers 503 from `at` for `ms`. */
  | { readonly kind: "partner"; readonly at: number; readonly ms: number }
  /**
   * The `node`-th simulated process (modulo the processes the pipeline spawned, in spawn order) crashes at its
   * `step`-th step — any call it makes into the world (publish, settle, a store, the downstream, a sleep) — and
   * comes back `down` ms later with its memory lost and durable state kept.
   */
  | { readonly kind: "crash"; readonly node: number; readonly step: number; readonly down: number }
  /**
   * The `node`-th simulated process (addressed as `crash` is) pauses for `ms` from its `step`-th step, memory
   * kept, as in a stop-the-world GC pause or a stopped VM: each of its fibers waits at its next step. Long
   * stalls outlast leases and visibility timeouts, so another process takes over while this one still
   * believes it holds the work, and then carries on.
   */
  | { readonly kind: "stall"; readonly node: number; readonly step: number; readonly ms: number }

/** Every fault kind. */
export const faultKinds = [
  "drop",
  "duplicate",
  "delay",
  "reorder",
  "corrupt",
  "replay",
  "forge",
  "skew",
  "outage",
  "slow",
  "burst",
  "evict",
  "partial",
  "crash",
  "partner",
  "stall"
] as const
/** A fault kind. */
export type FaultKind = typeof faultKinds[number]

/** A whole run: the seed of Effect's `Random`, the workload, the faults and the interleaving choices. */
export interface Scenario {
  readonly seed: number
  readonly workload: ReadonlyArray<WorkItem>
  readonly faults: ReadonlyArray<Fault>
  readonly choices: ReadonlyArray<number>
}

/** Sizes and relative weights of the generated scenarios; every field has a default. */
export interface Config {
  /** Most messages per run. Default 8. */
  readonly maxMessages?: number
  /** Distinct ordering keys. Default 3. */
  readonly keys?: number
  /** Most faults per run. Default 6. */
  readonly maxFaults?: number
  /** Virtual ms during which faults fire; afterwards everything is healed. Default 20 000. */
  readonly faultWindow?: number
  /** Relative weight of each fault kind (0 disables it). Default 1 each. */
  readonly weights?: Partial<Record<FaultKind, number>>
  /** Share of poison messages, 0..1. Default 0.1. */
  readonly poisonRate?: number
  /** Most interleaving choices. Default 16. */
  readonly maxChoices?: number
}

const nth = fc.nat({ max: 12 })

/** The arbitrary of one fault of each kind (times fall inside the fault window). */
export const faultArbitraries = (window: number): Record<FaultKind, fc.Arbitrary<Fault>> => {
  // Biased to the start, where the workload is densest, so timed faults overlap traffic often.
  const at = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: Math.max(0, window - 1) }))
  return {
    drop: nth.map((n) => ({ kind: "drop", nth: n })),
    duplicate: fc.record({ nth, copies: fc.integer({ min: 1, max: 3 }) }).map((r) => ({ kind: "duplicate", ...r })),
    delay: fc.record({ nth, ms: fc.integer({ min: 1, max: 20_000 }) }).map((r) => ({ kind: "delay", ...r })),
    reorder: nth.map((n) => ({ kind: "reorder", nth: n })),
    corrupt: nth.map((n) => ({ kind: "corrupt", nth: n })),
    replay: fc.record({
      nth,
      after: fc.oneof(fc.integer({ min: 1, max: 20_000 }), fc.integer({ min: 40_000, max: 50_000 }))
    }).map((r) => ({ kind: "replay", ...r })),
    forge: at.map((t) => ({ kind: "forge", at: t })),
    skew: fc.record({ at, ms: fc.integer({ min: -5_000, max: 5_000 }) }).map((r) => ({ kind: "skew", ...r })),
    outage: fc.record({ at, ms: fc.integer({ min: 1, max: 10_000 }) }).map((r) => ({ kind: "outage", ...r })),
    slow: fc.record({ nth, ms: fc.integer({ min: 1, max: 3_000 }) }).map((r) => ({ kind: "slow", ...r })),
    burst: fc.record({ at, count: fc.integer({ min: 1, max: 10 }) }).map((r) => ({ kind: "burst", ...r })),
    evict: at.map((t) => ({ kind: "evict", at: t })),
    partial: fc.record({ nth, accepted: fc.nat({ max: 3 }) }).map((r) => ({ kind: "partial", ...r })),
    partner: fc.record({ at, ms: fc.integer({ min: 1, max: 10_000 }) }).map((r) => ({ kind: "partner", ...r })),
    crash: fc.record({
      node: fc.nat({ max: 15 }),
      // Most processes take few steps (a drain only when something is dead-lettered): small steps come often.
      step: fc.oneof(fc.nat({ max: 8 }), fc.nat({ max: 60 })),
      down: fc.oneof(fc.integer({ min: 1, max: 500 }), fc.integer({ min: 500, max: 10_000 }))
    }).map((r) => ({ kind: "crash", ...r })),
    stall: fc.record({
      node: fc.nat({ max: 15 }),
      step: fc.oneof(fc.nat({ max: 8 }), fc.nat({ max: 60 })),
      // Short pauses, and pauses past the world's 30 s visibility timeout and the stores' leases.
      ms: fc.oneof(fc.integer({ min: 1, max: 5_000 }), fc.integer({ min: 25_000, max: 90_000 }))
    }).map((r) => ({ kind: "stall", ...r }))
  }
}

/** The scenario arbitrary: fast-check shrinks the workload, the faults and the choices together. */
export const arbitrary = (config: Config = {}): fc.Arbitrary<Scenario> => {
  const window = config.faultWindow ?? 20_000
  const arbs = faultArbitraries(window)
  const weighted = faultKinds
    .map((kind) => ({ arbitrary: arbs[kind], weight: config.weights?.[kind] ?? 1 }))
    .filter((w) => w.weight > 0)
  const poisonRate = config.poisonRate ?? 0.1
  const item: fc.Arbitrary<WorkItem> = fc.record({
    key: fc.nat({ max: Math.max(0, (config.keys ?? 3) - 1) }),
    amount: fc.integer({ min: 1, max: 1000 }),
    at: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: Math.floor(window / 2) })),
    spaced: fc.boolean(),
    // A uniform draw in thousandths: fast-check's doubles are biased towards the ends of their range, which
    // made a 10% rate poison almost every message. Poison sits at the top of the range, so shrinking (towards
    // 0) makes a message healthy.
    poison: poisonRate <= 0
      ? fc.constant(false)
      : fc.noBias(fc.integer({ min: 0, max: 999 })).map((x) => x >= 1000 - Math.round(poisonRate * 1000))
  })
  return fc.record({
    seed: fc.integer({ min: 0, max: 0x7fffffff }),
    workload: fc.array(item, { minLength: 1, maxLength: config.maxMessages ?? 8 }),
    faults: weighted.length === 0
      ? fc.constant([])
      : fc.array(fc.oneof(...weighted), { maxLength: config.maxFaults ?? 6 }),
    choices: fc.array(fc.nat({ max: 7 }), { maxLength: config.maxChoices ?? 16 })
  })
}

/** The number of generated events in a scenario (messages + faults + choices), the size shrinking minimises. */
export const size = (scenario: Scenario): number =>
  scenario.workload.length + scenario.faults.length + scenario.choices.length
