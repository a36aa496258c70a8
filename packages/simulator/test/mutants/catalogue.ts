/**
 * Mutants of Bulwark's own packages: each a small textual change to one source file, applied as the sources
 * are bundled for the mutant's child process (or, should bundling fail, while the module loads: `hook.mjs`),
 * so a simulation of the correct reference pipeline runs against the broken package. Every mutant must be caught — an invariant named, a counterexample shrunk to ≤ 10 events — while
 * the unmutated packages pass.
 */
import { only, partnerRate, partnerRateChecks, policy, shortSchedule, shortScheduleChecks } from "../../examples/catalogue.js"
import { pipeline, type Variant } from "../../examples/pipeline.js"
import type { Policy } from "../../src/History.js"
import type * as Invariant from "../../src/Invariant.js"
import type * as Scenario from "../../src/Scenario.js"
import * as Simulation from "../../src/Simulation.js"

/** One mutant of a package's source. */
export interface Mutant {
  readonly id: string
  /** What the change breaks, in one line. */
  readonly description: string
  /** Repository-relative path of the mutated file. */
  readonly file: string
  /** Text that occurs exactly once in the file … */
  readonly search: string
  /** … and what it becomes. */
  readonly replace: string
  /** The invariant(s) expected to catch it. */
  readonly caughtBy: ReadonlyArray<string>
  /** The faults the check generates (the reference pipeline is always the one run). */
  readonly workload: Scenario.Config
  /** Scenarios to try. Default 150. */
  readonly runs?: number
  /** Scenarios fast-check may try while shrinking. Default 200. */
  readonly shrinkBudget?: number
  /** World settings (e.g. a slower downstream). */
  readonly world?: Simulation.Options["world"]
  /** Settings of the (correct) reference pipeline the mutant is checked with, e.g. two replayers. */
  readonly variant?: Partial<Variant>
  /** The policy and invariants it is checked with, when not the catalogue's policy and every built-in one. */
  readonly checks?: { readonly policy: Partial<Policy>; readonly invariants?: ReadonlyArray<Invariant.Invariant> }
}

/** The simulation a mutant is checked with: the correct reference pipeline under the mutant's workload. */
export const simulationOf = (mutant: Mutant): Simulation.Simulation =>
  Simulation.make({
    name: `mutant ${mutant.id}`,
    pipeline: pipeline(mutant.variant),
    workload: mutant.workload,
    ...(mutant.world === undefined ? {} : { world: mutant.world }),
    ...(mutant.checks ?? { policy })
  })

/** The mutants. */
export const mutants: ReadonlyArray<Mutant> = [
  {
    id: "pipeline-ack-first",
    description: "the pipeline acknowledges a delivery before its handler ran",
    file: "packages/core/src/Pipeline.ts",
    search: "Effect.exit(restore(handler({ ...decoded, attempt: delivery.attempt }))),",
    replace: "Effect.zipRight(Effect.ignore(delivery.ack), Effect.exit(restore(handler({ ...decoded, attempt: delivery.attempt })))),",
    caughtBy: ["no-lost", "liveness", "no-transient-dead-letters"],
    workload: { maxFaults: 4, weights: only({ crash: 2, outage: 1 }) }
  },
  {
    id: "transport-no-redelivery",
    description: "the memory transport never redelivers a delivery whose visibility timeout ran out",
    file: "packages/transport/src/internal/memory.ts",
    search: "if (flight.deadline <= now) {",
    replace: "if (false && flight.deadline <= now) {",
    caughtBy: ["liveness", "progress"],
    workload: { maxFaults: 2, weights: only({ drop: 1, crash: 1 }) }
  },
  {
    id: "transport-unordered",
    description: "the memory transport hands out a key's next message while one is in flight",
    file: "packages/transport/src/internal/memory.ts",
    search: "if (orderedPerKey && stored.message.key !== \"\" && group.busyKeys.has(stored.message.key)) continue",
    replace: "if (false) continue",
    caughtBy: ["order-per-key"],
    workload: { maxFaults: 3, keys: 1, weights: only({ slow: 1, drop: 1 }) }
  },
  {
    id: "transport-dead-letter-lost",
    description: "the memory transport settles a dead-lettered delivery without keeping the copy",
    file: "packages/transport/src/internal/memory.ts",
    search: "append(Driver.deadLetterTopic(flight.stored.message.topic), [copy])",
    replace: "void [copy]",
    caughtBy: ["no-transient-dead-letters"],
    workload: { maxFaults: 2, weights: only({ outage: 1 }) }
  },
  {
    id: "driver-nack-no-delay",
    description: "the transports' shared delivery drops a nack's delay, so a nacked message comes back at once",
    file: "packages/transport/src/Driver.ts",
    search: "settlement.nack(delayMillisOf(options))",
    replace: "settlement.nack(0)",
    caughtBy: ["redelivery-after-delay"],
    // A nack with a delay comes from a duplicate arriving while its first copy is still in progress.
    workload: { maxFaults: 3, weights: only({ duplicate: 1, slow: 1 }) }
  },
  {
    id: "driver-dead-letter-acks",
    description: "the transports' shared delivery acknowledges a dead-lettered delivery instead of keeping its copy",
    file: "packages/transport/src/Driver.ts",
    search: "settlement.deadLetter(deadLetterCopy(message, reason), reason)",
    replace: "settlement.ack",
    caughtBy: ["no-lost", "no-transient-dead-letters"],
    workload: { maxFaults: 2, poisonRate: 0.4, weights: only({ outage: 1 }) }
  },
  {
    id: "ingress-ack-before-publish",
    description: "the webhook ingress answers before the publish is confirmed",
    file: "packages/webhook/src/Ingress.ts",
    search: ": store(prepared, guard)",
    replace: ": Effect.as(Effect.forkDaemon(Effect.zipRight(Effect.sleep(5), store(prepared, guard))), { id: prepared.id, duplicate: false })",
    caughtBy: ["no-lost", "liveness"],
    workload: { maxFaults: 3, weights: only({ crash: 3 }) }
  },
  {
    id: "ingress-remember-before-publish",
    description: "the webhook ingress records the id as seen before publishing, so a failed publish is never retried",
    file: "packages/webhook/src/Ingress.ts",
    search: "const publish = Effect.flatMap(Transport.Publisher, (publisher) =>",
    replace: "const publish = Effect.flatMap(Effect.zipRight(guard.commit(key, dedupeTtl), Transport.Publisher), (publisher) =>",
    caughtBy: ["no-lost", "liveness"],
    workload: { maxFaults: 3, weights: only({ partial: 2, crash: 1 }) }
  },
  {
    id: "verifier-no-tolerance",
    description: "the Standard Webhooks verifier accepts any timestamp, so a captured request replays forever",
    file: "packages/webhook/src/internal/crypto.ts",
    search: "if (Math.abs(now - timestamp) > toleranceSeconds) {",
    replace: "if (false) {",
    caughtBy: ["webhook-authentic"],
    workload: { maxFaults: 3, weights: only({ replay: 3 }) }
  },
  {
    id: "verifier-any-signature",
    description: "the Standard Webhooks verifier accepts a signature of the right length without comparing it",
    file: "packages/webhook/src/internal/crypto.ts",
    search: "if (timingSafeEqual(expected, signature)) return { scheme: \"standard\", id, timestamp }",
    replace: "if (expected.length === signature.length) return { scheme: \"standard\", id, timestamp }",
    caughtBy: ["webhook-authentic", "no-unexpected"],
    workload: { maxFaults: 2, weights: only({ forge: 2, corrupt: 1 }) }
  },
  {
    id: "drain-ack-before-store",
    description: "the dead-letter drain acknowledges a copy before the store has it",
    file: "packages/dead-letter/src/DeadLetter.ts",
    search: "        storeDelivery(store, topic, delivery).pipe(",
    replace: "        Effect.zipRight(delivery.ack, storeDelivery(store, topic, delivery)).pipe(",
    caughtBy: ["no-transient-dead-letters"],
    workload: { maxFaults: 4, weights: only({ outage: 1, crash: 3 }) }
  },
  {
    id: "replay-mark-before-publish",
    description: "replay marks an entry replayed before its publish is confirmed",
    file: "packages/dead-letter/src/Replay.ts",
    search: "      const generation = entry.replayCount + 1\n",
    replace: "      yield* store.markReplayed(entry)\n      const generation = entry.replayCount + 1\n",
    caughtBy: ["no-transient-dead-letters"],
    workload: { maxFaults: 4, maxChoices: 0, weights: only({ outage: 1, crash: 2, partial: 1 }) },
    shrinkBudget: 600
  },
  {
    id: "replay-claim-ignores-lease",
    description: "the dead-letter store hands out a replay claim while another replayer's claim is live",
    file: "packages/dead-letter/src/DeadLetterStore/Memory.ts",
    search: "if (entry.replay === \"replaying\" && (claims.get(id) ?? 0) > now) return Option.none()",
    replace: "if (false) return Option.none()",
    caughtBy: ["replay-once"],
    workload: { maxFaults: 2, weights: only({ outage: 1 }) },
    // The replay rate is global (one slot at a time across replayers): a publish slower than the spacing
    // keeps the first claim live when the second replayer's turn comes.
    world: { publishLatency: 200 },
    variant: { replayers: 2 }
  },
  {
    id: "retry-ignores-max-attempts",
    description: "retry keeps going past maxAttempts",
    file: "packages/retry/src/Retry.ts",
    search: "if (attempts >= policy.maxAttempts) return",
    replace: "if (attempts >= policy.maxAttempts * 100) return",
    caughtBy: ["call-budget", "retry-within-policy", "outage-call-budget"],
    workload: { maxFaults: 2, weights: only({ outage: 1 }) }
  },
  {
    id: "retry-retries-permanent",
    description: "retry also retries failures classified permanent",
    file: "packages/retry/src/Retry.ts",
    search: "if (!policy.retryOn(error, verdict, judgedAt)) {",
    replace: "if (false) {",
    caughtBy: ["permanent-not-retried"],
    workload: { maxFaults: 1, poisonRate: 0.5, weights: only({ drop: 1 }) }
  },
  {
    id: "retry-hint-without-jitter",
    description: "retry waits exactly a Retry-After hint (an open breaker's), so the callers it rejected come back together",
    file: "packages/retry/src/Retry.ts",
    search: "if (hint > delay) delay = hint + delay",
    replace: "if (hint > delay) delay = hint",
    caughtBy: ["no-synchronised-retries"],
    workload: { maxFaults: 3, faultWindow: 5_000, weights: only({ outage: 1, burst: 1 }) }
  },
  {
    id: "relay-mark-before-publish",
    description: "the outbox relay marks rows published before the publish is confirmed",
    file: "packages/outbox/src/Relay.ts",
    search: "        const whole = yield* Effect.either(publisher.publish(topic, rows.map((r) => r.message)))",
    replace: "        yield* store.markPublished(relayId, rows.map((r) => r.id))\n        const whole = yield* Effect.either(publisher.publish(topic, rows.map((r) => r.message)))",
    caughtBy: ["liveness", "no-lost"],
    workload: { maxFaults: 3, weights: only({ partial: 2, crash: 1 }) }
  },
  {
    id: "relay-ignores-publish-failure",
    description: "the outbox relay marks a batch published although its publish failed",
    file: "packages/outbox/src/Relay.ts",
    search: "        if (Either.isRight(whole)) {",
    replace: "        if (true) {",
    caughtBy: ["no-lost", "liveness"],
    workload: { maxFaults: 4, weights: only({ partial: 1 }) }
  },
  {
    id: "breaker-never-trips",
    description: "the breaker never opens, whatever the failure rate",
    file: "packages/circuit-breaker/src/internal/machine.ts",
    search: "if (failures / calls >= config.failureRateThreshold) return true",
    replace: "if (failures / calls > 1) return true",
    caughtBy: ["outage-call-budget"],
    // It takes most of the workload to overload the downstream: no interleaving choices, to stay small.
    workload: { maxFaults: 1, maxChoices: 0, maxMessages: 10, faultWindow: 15_000, weights: only({ outage: 1 }) }
  },
  {
    id: "breaker-unbounded-probes",
    description: "a half-open breaker admits every caller instead of its permitted probes",
    file: "packages/circuit-breaker/src/internal/machine.ts",
    search: "if (s.probes.admitted >= config.permittedProbes) {",
    replace: "if (false) {",
    caughtBy: ["half-open-probe-bound"],
    // Slow answers keep a probe in flight long enough for a second caller to arrive.
    workload: { maxFaults: 3, faultWindow: 5_000, maxChoices: 4, weights: only({ outage: 1, burst: 1 }) },
    world: { downstreamLatency: 200 },
    shrinkBudget: 600
  },
  {
    id: "dispatch-claim-ignores-lease",
    description: "the dispatch store hands out a delivery another dispatcher worker holds under a live lease",
    file: "packages/webhook/src/DispatchStore/Memory.ts",
    search: "d.record.state === \"pending\" && d.record.dueAt <= now && d.claimedUntil <= now",
    replace: "d.record.state === \"pending\" && d.record.dueAt <= now",
    caughtBy: ["webhook-delivered-once"],
    workload: { maxFaults: 2, weights: only({ partner: 1 }) }
  },
  {
    id: "dispatch-sends-stale-claim",
    description: "a dispatcher sends its request although its claim's lease ran out while it resolved the address or waited",
    file: "packages/webhook/src/internal/attempt.ts",
    search: "if (sendBy !== undefined && (yield* Clock.currentTimeMillis) > sendBy) return undefined",
    replace: "",
    caughtBy: ["webhook-delivered-once"],
    // The stall has to land on a dispatcher between its claim and its request, for longer than the lease.
    workload: { maxFaults: 6, weights: only({ stall: 1 }) }
  },
  {
    id: "dispatch-counts-refused-permits",
    description: "the dispatcher records a permit refused by its rate limit as one of the delivery's attempts, so it gives a delivery up before it sent it in full",
    file: "packages/webhook/src/internal/dispatch.ts",
    search: "return yield* settle(undefined, { _tag: \"Retry\", dueAt: now + afterRefusedPermit(",
    replace: "return yield* settle(attempt, { _tag: \"Retry\", dueAt: now + afterRefusedPermit(",
    caughtBy: ["webhook-exhausted-after-schedule"],
    // A delivery refused permits while the partner is down: its attempt numbers run past the schedule's end.
    workload: { maxFaults: 2, maxChoices: 0, weights: only({ partner: 1 }) },
    variant: { partnerRate },
    checks: partnerRateChecks
  },
  {
    id: "dispatch-gives-up-one-early",
    description: "the dispatcher gives a failing delivery up as exhausted one attempt before its schedule's last",
    file: "packages/webhook/src/internal/dispatch.ts",
    search: "if (n >= schedule.length) return { _tag: \"Failed\", reason: \"exhausted\" }",
    replace: "if (n >= schedule.length - 1) return { _tag: \"Failed\", reason: \"exhausted\" }",
    caughtBy: ["webhook-exhausted-after-schedule"],
    // Only a delivery that fails through its whole schedule shows it: a partner outage longer than a short one.
    workload: { maxFaults: 2, maxChoices: 0, weights: only({ partner: 1 }) },
    variant: { dispatchSchedule: shortSchedule },
    checks: shortScheduleChecks
  },
  {
    id: "relay-claim-ignores-key-head",
    description: "the outbox store lets a relay claim a key's later row while an earlier one is unpublished",
    file: "packages/outbox/src/internal/memoryStore.ts",
    search: "          if (heads.has(key)) continue\n",
    replace: "",
    caughtBy: ["order-per-key"],
    // A key's rows must be committed close together, so a failed head row is still waiting when the next one
    // commits: many messages, few keys.
    workload: { maxFaults: 3, maxMessages: 10, keys: 1, weights: only({ partial: 1 }) },
    variant: { relays: 2 }
  },
  {
    id: "partitioned-claim-ignores-retrying",
    description: "the partitioned outbox store hands out a key's later rows while an earlier one waits for its retry",
    file: "packages/outbox/src/internal/memoryStore.ts",
    search: "if (row.availableAt > now || retrying.has(row.message.key) || !owns(relayId, row)) continue",
    replace: "if (row.availableAt > now || !owns(relayId, row)) continue",
    caughtBy: ["order-per-key"],
    workload: { maxFaults: 3, maxMessages: 10, keys: 1, weights: only({ partial: 1 }) },
    world: { partitionedOutbox: true },
    variant: { relays: 2 }
  },
  {
    id: "relay-publishes-past-failed-row",
    description: "the outbox relay goes on publishing a key's later rows of a claim after an earlier one failed",
    file: "packages/outbox/src/Relay.ts",
    search: "            if (verdict !== \"dead\") result.stopped.add(outcome.row.message.key)\n",
    replace: "",
    caughtBy: ["order-per-key"],
    workload: { maxFaults: 3, maxMessages: 10, keys: 1, weights: only({ partial: 1 }) },
    world: { partitionedOutbox: true },
    variant: { relays: 2 }
  }
]
