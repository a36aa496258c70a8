/**
 * Invariants: named properties of a run, checked on every event as it happens (safety) and once at the end
 * (liveness and totals). They compose as plain arrays; users add their own with {@link make}.
 */
import type { Event, History } from "./History.js"

/** What the end-of-run check can see besides the history. */
export interface Final {
  readonly history: History
  /** Messages not in a final state, with where they are stuck. */
  readonly pending: ReadonlyMap<string, string>
  /** Virtual ms at which the run ended. */
  readonly endedAt: number
  /** Virtual ms by which everything had to be final (end of fault window + liveness bound). */
  readonly deadline: number
}

/** A named property of a run. Each check answers a violation message, or undefined when it holds. */
export interface Invariant {
  readonly name: string
  readonly description: string
  /** Checked on every event (safety: must hold during the fault window too). */
  readonly onEvent?: (event: Event, history: History) => string | undefined
  /** Checked once when the run ends (after healing). */
  readonly atEnd?: (final: Final) => string | undefined
  /**
   * The events this invariant judges. A check in which no run produced one of them has not tested the
   * invariant at all, and the report lists it as vacuous (e.g. a breaker invariant with no breaker event).
   */
  readonly relevant?: (event: Event) => boolean
}

/** Builds an invariant. */
export const make = (invariant: Invariant): Invariant => invariant

const workload = (ref: string | undefined): ref is string => ref !== undefined && /^w\d+$/.test(ref)

/**
 * Applied and dead-lettered are exclusive. Not in {@link all}: a success the client saw as a timeout is
 * dead-lettered although it happened (and a replay then finds it done), which no pipeline with timeouts can
 * rule out; add it for pipelines whose calls never time out.
 */
export const singleFinalState = make({
  name: "single-final-state",
  description: "no message is both applied and left dead-lettered",
  relevant: (e) => e.kind === "dead-lettered",
  atEnd: ({ history }) => {
    const both = [...history.deadLettered.keys()].filter((ref) => history.applied("downstream", ref) > 0)
    return both.length === 0 ? undefined : `${both.join(", ")} applied and also left dead-lettered`
  }
})

/** Acknowledged messages are never lost. */
export const noLoss = make({
  name: "no-lost",
  description: "lost = 0: every message the ingress acknowledged is applied, dead-lettered, or pending with a reason",
  atEnd: ({ history, pending }) => {
    const lost = [...history.acknowledged].filter((ref) =>
      history.applied("downstream", ref) === 0 && !history.deadLettered.has(ref) && !pending.has(ref)
    )
    return lost.length === 0 ? undefined : `lost ${lost.join(", ")}: acknowledged, then found nowhere`
  }
})

/** Nothing is applied that nobody sent. */
export const noUnexpected = make({
  name: "no-unexpected",
  description: "unexpected = 0: no effect for a message that was never sent (forged or invented)",
  onEvent: (e) => e.kind === "effect" && !workload(e.ref) ? `effect ${String(e.data?.name)} for unknown message ${e.ref}` : undefined
})

/** Side effects happen once, however many deliveries there were. */
export const noDuplicateEffects = make({
  name: "no-duplicate-effects",
  description: "duplicate side effects = 0 (duplicate deliveries are expected and counted, not failures)",
  relevant: (e) => (e.kind === "deliver" && e.data?.seen === 2) || e.kind === "replay-publish",
  onEvent: (e) =>
    e.kind === "effect" && typeof e.data?.count === "number" && e.data.count > 1
      ? `${String(e.data.name)} effect applied ${e.data.count} times for ${e.ref}`
      : undefined
})

/** Per key, downstream effects follow commit order. */
export const orderPerKey = make({
  name: "order-per-key",
  description: "per key, the consumer applies events in the order they were committed (replayed dead letters excepted: a replay comes later by design)",
  relevant: (e) => e.kind === "effect" && e.data?.name === "downstream" && typeof e.data.order === "number" && e.data.order > 0,
  onEvent: (e, h) => {
    if (e.kind !== "effect" || e.data?.name !== "downstream" || typeof e.data.order !== "number") return undefined
    if (e.ref !== undefined && h.replays.has(e.ref)) return undefined
    const key = String(e.data.key)
    const last = h.lastOrder.get(key)
    h.lastOrder.set(key, Math.max(last ?? -1, e.data.order))
    return last !== undefined && e.data.order < last
      ? `key ${key}: ${e.ref} (commit #${e.data.order}) applied after commit #${last}`
      : undefined
  }
})

const legal: Record<string, ReadonlyArray<string>> = {
  closed: ["open", "isolated", "disabled"],
  open: ["half-open", "isolated", "disabled"],
  "half-open": ["closed", "open", "isolated", "disabled"],
  isolated: ["closed", "disabled"],
  disabled: ["closed", "isolated"]
}

/** The real breaker only moves along legal edges. */
export const breakerTransitions = make({
  name: "breaker-transitions",
  description: "breaker transitions are closed→open→half-open→(closed|open) (manual isolate/disable aside)",
  relevant: (e) => e.kind === "breaker:transition",
  onEvent: (e, h) => {
    if (e.kind !== "breaker:transition") return undefined
    const from = String(e.data?.from)
    const to = String(e.data?.to)
    return legal[from]?.includes(to) ?? false ? undefined : `breaker ${String(e.data?.breaker)}: illegal transition ${from} → ${to}`
  }
})

/** A half-open breaker lets through at most its permitted probes. */
export const halfOpenProbes = make({
  name: "half-open-probe-bound",
  description: "a half-open breaker lets at most its permitted probes (or `policy.halfOpenProbes`) through at once",
  relevant: (e) => e.kind === "breaker:probe",
  onEvent: (e, h) => {
    if (e.kind !== "breaker:probe" || typeof e.data?.inFlight !== "number") return undefined
    const bound = h.policy.halfOpenProbes ?? (typeof e.data.permitted === "number" ? e.data.permitted : 1)
    return e.data.inFlight > bound
      ? `breaker ${String(e.data.breaker)}: ${e.data.inFlight} concurrent half-open probes (bound ${bound})`
      : undefined
  }
})

/** Deliveries and retries stay within policy. */
export const retryWithinPolicy = make({
  name: "retry-within-policy",
  description:
    "deliveries a consumer saw per message, besides the copies a duplicate fault injected, ≤ policy.maxDeliveries; attempts of one call ≤ policy.maxCallAttempts",
  relevant: (e) => e.kind === "retry:retry" || (e.kind === "deliver" && e.data?.seen === 2),
  onEvent: (e, h) => {
    // The duplicate fault's copies are the environment's doing, not redeliveries the policy bounds.
    const copies = typeof e.data?.copies === "number" ? e.data.copies : 0
    if (e.kind === "deliver" && typeof e.data?.seen === "number" && e.data.seen - copies > h.policy.maxDeliveries) {
      const injected = copies > 0 ? ` besides ${copies} injected copies` : ""
      return `${e.ref ?? "message"} delivered ${e.data.seen - copies} times to consumers${injected} (policy ${h.policy.maxDeliveries})`
    }
    if (e.kind === "retry:retry" && typeof e.data?.attempt === "number" && e.data.attempt > h.policy.maxCallAttempts) {
      return `${e.ref ?? "a call"}: attempt ${e.data.attempt} in one delivery (policy ${h.policy.maxCallAttempts})`
    }
    return undefined
  }
})

/** Retries of different messages must not land on the same instant (jitter). */
export const noRetryStorm = make({
  name: "no-synchronised-retries",
  description: "no more than policy.maxSynchronisedRetries retries of different messages start at the same virtual instant",
  relevant: (e) => e.kind === "retry:retry",
  onEvent: (e, h) => {
    if (e.kind !== "retry:retry") return undefined
    const who = String(e.data?.envelopeId ?? e.ref ?? "")
    let at = h.retriesAtInstant.get(e.t)
    if (at === undefined) {
      at = new Set()
      h.retriesAtInstant.set(e.t, at)
    }
    at.add(who)
    return at.size > h.policy.maxSynchronisedRetries
      ? `${at.size} retries of different messages at the same instant t=${e.t}ms (jitter missing?)`
      : undefined
  }
})

/**
 * A nack's delay is kept: the transport hands the message back to its group (as the next attempt) no earlier
 * than the delay the nack asked for. A delay dropped anywhere between the pipeline and the broker turns a
 * backoff into a hot loop that spends every attempt within an outage.
 */
export const redeliveryAfterDelay = make({
  name: "redelivery-after-delay",
  description: "a message nacked with a delay is not redelivered to its group before the delay has passed",
  relevant: (e) => e.kind === "nack" && typeof e.data?.delay === "number" && e.data.delay > 0,
  onEvent: (e, h) => {
    if (e.lane !== "transport" || e.ref === undefined || typeof e.data?.attempt !== "number") return undefined
    const key = `${String(e.data.group)}|${String(e.data.topic)}|${e.ref}`
    if (e.kind === "nack") {
      if (typeof e.data.delay === "number") h.nackedUntil.set(key, { attempt: e.data.attempt, until: e.t + e.data.delay })
      return undefined
    }
    if (e.kind !== "deliver") return undefined
    const nacked = h.nackedUntil.get(key)
    return nacked !== undefined && e.data.attempt === nacked.attempt + 1 && e.t < nacked.until
      ? `${e.ref} redelivered as attempt ${e.data.attempt} at t=${e.t}ms, before its nack's delay ran out (t=${nacked.until}ms)`
      : undefined
  }
})

/** An outbox row is published only once its transaction committed. */
export const noPublishedUncommitted = make({
  name: "no-published-uncommitted",
  description: "no event is published from an outbox row whose transaction did not commit",
  relevant: (e) => e.kind === "publish-row",
  onEvent: (e) =>
    e.kind === "publish-uncommitted-row" ? `${e.ref ?? String(e.data?.id)}: published from an outbox row that never committed` : undefined
})

/** A downstream call budget per message: retries multiply, they must not run away. */
export const callBudget = make({
  name: "call-budget",
  description: "downstream calls per message ≤ policy.maxCallsPerMessage (default maxDeliveries × maxCallAttempts)",
  relevant: (e) => e.lane === "downstream" && e.kind === "unavailable",
  onEvent: (e, h) => {
    if (e.lane !== "downstream" || e.ref === undefined) return undefined
    const calls = h.calls.get(e.ref) ?? 0
    const budget = h.policy.maxCallsPerMessage ?? h.policy.maxDeliveries * h.policy.maxCallAttempts
    return calls > budget ? `${e.ref} called the downstream ${calls} times (budget ${budget})` : undefined
  }
})

/**
 * A failing dependency is not hammered: while the downstream is failing, the calls it receives in any one
 * virtual second stay within `policy.maxFailingCallsPerSecond` (a breaker that opens, and backoff, keep
 * them there; a breaker that never opens does not).
 */
export const outageCallBudget = make({
  name: "outage-call-budget",
  description: "while the downstream fails, it gets at most policy.maxFailingCallsPerSecond calls in any virtual second",
  relevant: (e) => e.lane === "downstream" && e.kind === "unavailable",
  onEvent: (e, h) => {
    if (e.lane !== "downstream" || e.kind !== "unavailable") return undefined
    const second = Math.floor(e.t / 1000)
    const n = (h.failingCalls.get(second) ?? 0) + 1
    h.failingCalls.set(second, n)
    return n > h.policy.maxFailingCallsPerSecond
      ? `${n} calls reached the failing downstream within one second (t=${second}s; budget ${h.policy.maxFailingCallsPerSecond}): no breaker or backoff held them back`
      : undefined
  }
})

/** A permanent failure (the downstream's 422) is not retried: one call per delivery at most. */
export const permanentNotRetried = make({
  name: "permanent-not-retried",
  description: "a message the downstream rejected for good is called no more often than it was delivered",
  relevant: (e) => e.lane === "downstream" && e.kind === "reject",
  onEvent: (e, h) => {
    if (e.ref === undefined) return undefined
    if (e.kind === "deliver" && typeof e.data?.topic === "string" && !e.data.topic.endsWith(".dlq")) {
      h.deliveriesOf.set(e.ref, (h.deliveriesOf.get(e.ref) ?? 0) + 1)
      return undefined
    }
    if (e.lane !== "downstream" || e.kind !== "reject") return undefined
    const n = (h.rejects.get(e.ref) ?? 0) + 1
    h.rejects.set(e.ref, n)
    const deliveries = h.deliveriesOf.get(e.ref) ?? 0
    return n > deliveries ? `${e.ref}: the downstream's permanent rejection was retried (${n} calls in ${deliveries} deliveries)` : undefined
  }
})

/**
 * A transient failure is retried before it is given up: a message the downstream would accept is not
 * dead-lettered on its first delivery without a single retry.
 */
export const noInstantDeadLetter = make({
  name: "no-instant-dead-letter",
  description: "a message that is not poison is not dead-lettered on its first delivery without any retry",
  relevant: (e) => e.kind === "dead-lettered",
  onEvent: (e, h) => {
    if (e.ref === undefined || !workload(e.ref)) return undefined
    if (e.kind === "deliver") {
      h.retriedSinceDelivery.set(e.ref, false)
      return undefined
    }
    if (e.kind === "retry:retry") {
      h.retriedSinceDelivery.set(e.ref, true)
      return undefined
    }
    if (e.kind !== "dead-lettered" || h.poison.has(e.ref) || e.data?.attempts !== 1) return undefined
    return h.retriedSinceDelivery.get(e.ref) === false
      ? `${e.ref} dead-lettered (${String(e.data?.category)}) on its first delivery without a retry, although its failure was transient`
      : undefined
  }
})

/** Messages that failed only because a dependency was down do not stay dead-lettered once it healed. */
export const noTransientDeadLetters = make({
  name: "no-transient-dead-letters",
  description: "after healing, only messages the downstream rejects for good (poison) remain dead-lettered",
  relevant: (e) => e.kind === "dead-lettered",
  atEnd: ({ history }) => {
    const stuck = [...history.deadLettered.keys()].filter((ref) =>
      workload(ref) && !history.poison.has(ref) && history.applied("downstream", ref) === 0
    )
    return stuck.length === 0
      ? undefined
      : `${stuck.join(", ")} dead-lettered (${history.deadLettered.get(stuck[0]!)}) although the failure was transient and has healed`
  }
})

/** A simulated process runs until it is stopped: a long-running loop that ends by itself is a silent outage. */
export const processRuns = make({
  name: "process-runs",
  description: "no simulated process (consumer, relay, drain, replayer) ends by itself",
  relevant: (e) => e.lane === "node",
  onEvent: (e) =>
    e.lane === "node" && e.kind === "exited" && e.data?.how !== "interrupted"
      ? `process ${String(e.data?.node)} ${String(e.data?.how)}${e.data?.cause === undefined ? "" : `: ${String(e.data.cause)}`}`
      : undefined
})

/** A dead letter is republished once per time it was dead-lettered, however many replayers run. */
export const replayOnce = make({
  name: "replay-once",
  description: "each dead-lettering of a message is republished by replay at most once",
  relevant: (e) => e.kind === "replay-publish",
  onEvent: (e, h) => {
    if (e.ref === undefined) return undefined
    if (e.kind === "dead-lettered") {
      h.deadLetterGenerations.set(e.ref, (h.deadLetterGenerations.get(e.ref) ?? 0) + 1)
      return undefined
    }
    if (e.kind !== "replay-publish") return undefined
    const generation = `${e.ref}#${h.deadLetterGenerations.get(e.ref) ?? 0}`
    const n = (h.replayPublishes.get(generation) ?? 0) + 1
    h.replayPublishes.set(generation, n)
    return n > 1 ? `${e.ref}: one dead-lettering republished ${n} times (entry ${String(e.data?.entry)})` : undefined
  }
})

/** The webhook receiver accepts only authentic, fresh requests. */
export const webhookAuthentic = make({
  name: "webhook-authentic",
  description: "no forged, corrupted or out-of-window webhook request is accepted",
  relevant: (e) => e.lane === "fault" && (e.kind === "forge" || e.kind === "corrupt" || e.kind === "replay"),
  onEvent: (e) =>
    e.kind === "accepted" && e.data?.authentic === false
      ? `accepted a ${String(e.data.why)} webhook request${e.ref === undefined ? "" : ` for ${e.ref}`}`
      : undefined
})

/**
 * A webhook is delivered to the partner once: a second 2xx for the same `webhook-id` is a duplicate delivery
 * unless no earlier one is known to its sender: each went to a process that crashed since or is paused (a
 * `stall`), or its answer never reached the sender, which gave up waiting. A request held up by its own
 * sender's pause at the send itself is excused too: it left after every check its sender could make (it could not record the success; receivers drop that copy by its
 * id). A second send while the first is still in flight, or after its 2xx was heard, is not excused. A sender
 * retrying in a queue consumer past the visibility timeout breaks it.
 */
export const webhookDeliveredOnce = make({
  name: "webhook-delivered-once",
  description: "no webhook-id gets a second successful delivery once its sender heard the first, or while the first is in flight",
  relevant: (e) => e.kind === "partner-2xx",
  onEvent: (e) =>
    e.kind === "partner-2xx" && typeof e.data?.count === "number" && e.data.count > 1 && e.data.excused !== true
      ? `webhook ${String(e.data.id)}${e.ref === undefined ? "" : ` (${e.ref})`} delivered ${e.data.count} times; an earlier delivery's sender heard its 2xx, or it was still in flight`
      : undefined
})

// Virtual times are sums of floating-point sleeps: an arrival at exactly a window's edge may read a hair early.
const edge = 1e-6

/**
 * Records an arrival at `at` among `arrivals` (kept in time order: one recorded late, such as a request held
 * up by its sender's pause, goes in its place) and answers the first window (t - windowMillis, t] holding it
 * with more than `limit` arrivals, if any: its first and last arrival and how many. A window ends at the new
 * arrival or at a later one within a window of it; an arrival exactly one window after another is in the next.
 */
const overLimit = (
  arrivals: Array<number>,
  at: number,
  rate: { readonly limit: number; readonly windowMillis: number }
): { readonly count: number; readonly from: number; readonly to: number } | undefined => {
  let i = arrivals.length
  while (i > 0 && arrivals[i - 1]! > at) i--
  arrivals.splice(i, 0, at)
  for (let j = i; j < arrivals.length && arrivals[j]! < at + rate.windowMillis - edge; j++) {
    const end = arrivals[j]!
    let first = j
    while (first > 0 && arrivals[first - 1]! > end - rate.windowMillis + edge) first--
    if (j - first + 1 > rate.limit) return { count: j - first + 1, from: arrivals[first]!, to: end }
  }
  return undefined
}

/**
 * The downstream's rate limit holds across processes: it never receives more than
 * `policy.downstreamRate.limit` calls in any window of `policy.downstreamRate.windowMillis`, whichever
 * processes made them. Processes each holding their own limiter (a store per process instead of one
 * shared store) each keep their own limit, and together exceed it. Not in {@link all}: add it with a
 * declared `downstreamRate` for pipelines that rate-limit their calls.
 */
export const downstreamRateLimit = make({
  name: "downstream-rate-limit",
  description: "the downstream receives at most policy.downstreamRate.limit calls in any window of policy.downstreamRate.windowMillis, over every process",
  relevant: (e) => e.lane === "downstream" && e.kind === "call",
  onEvent: (e, h) => {
    const rate = h.policy.downstreamRate
    if (rate === undefined || e.lane !== "downstream" || e.kind !== "call") return undefined
    const over = overLimit(h.downstreamArrivals, e.t, rate)
    return over === undefined
      ? undefined
      : `${over.count} calls reached the downstream between t=${Math.round(over.from)}ms and t=${Math.round(over.to)}ms, within one ${rate.windowMillis} ms window (limit ${rate.limit})`
  }
})

const partnerArrival = (e: Event): boolean => e.lane === "sender" && (e.kind === "partner-2xx" || e.kind === "partner-unavailable")

/**
 * The webhook partner's rate limit holds across processes: it never receives more than
 * `policy.partnerRate.limit` requests in any window of `policy.partnerRate.windowMillis`, whichever dispatcher
 * processes sent them (counted where they arrive, answered or not; one its sender's pause held up at the send
 * itself, from when it left). Dispatchers each holding their own limiter keep the limit each, and together
 * exceed it. Not in {@link all}: add it with a declared `partnerRate` for pipelines whose dispatchers are
 * given a `rateLimit`.
 */
export const partnerRateLimit = make({
  name: "partner-rate-limit",
  description: "the webhook partner receives at most policy.partnerRate.limit requests in any window of policy.partnerRate.windowMillis, over every process",
  relevant: partnerArrival,
  onEvent: (e, h) => {
    const rate = h.policy.partnerRate
    if (rate === undefined || !partnerArrival(e)) return undefined
    // A request its sender's pause held up at the send counts from when it left (`sentAt`): the limiter
    // paced it then, and no client-side limit bounds how long a request then takes to arrive.
    const over = overLimit(h.partnerArrivals, typeof e.data?.sentAt === "number" ? e.data.sentAt : e.t, rate)
    return over === undefined
      ? undefined
      : `${over.count} requests reached the webhook partner between t=${Math.round(over.from)}ms and t=${Math.round(over.to)}ms, within one ${rate.windowMillis} ms window (limit ${rate.limit})`
  }
})

/**
 * A permit refused by the dispatcher's own rate limit is not an attempt: a delivery the durable dispatcher
 * gives up as exhausted made `policy.webhookAttempts` (its schedule's entries) attempts first, each a request
 * that reached the partner or one an open breaker held back (which the schedule counts by design). Requests
 * are counted where they arrive; the breaker's are read from the dispatch store's record (the world's
 * `dispatch-exhausted`). A dispatcher that counts a refused permit as an attempt gives a delivery up early
 * under a tight shared limit. Not in {@link all}: add it with a declared `webhookAttempts`.
 */
export const webhookExhaustedAfterSchedule = make({
  name: "webhook-exhausted-after-schedule",
  description: "a webhook delivery the dispatcher gives up as exhausted made policy.webhookAttempts attempts first (requests the partner received, or held back by an open breaker); a permit the rate limit refused is not one",
  relevant: (e) => e.kind === "dispatch-exhausted",
  onEvent: (e, h) => {
    const scheduled = h.policy.webhookAttempts
    if (scheduled === undefined || e.lane !== "sender") return undefined
    if (partnerArrival(e)) {
      const id = String(e.data?.id)
      h.partnerRequests.set(id, (h.partnerRequests.get(id) ?? 0) + 1)
      return undefined
    }
    if (e.kind !== "dispatch-exhausted") return undefined
    const id = String(e.data?.id)
    const requests = h.partnerRequests.get(id) ?? 0
    const heldBack = typeof e.data?.breakerOpen === "number" ? e.data.breakerOpen : 0
    const refused = typeof e.data?.rateLimited === "number" ? e.data.rateLimited : 0
    return requests + heldBack < scheduled
      ? `webhook ${id}${e.ref === undefined ? "" : ` (${e.ref})`} given up as exhausted after ${requests} request(s) to the partner and ${heldBack} held back by the breaker, fewer than the schedule's ${scheduled} attempts (${refused} permit(s) refused by the rate limit)`
      : undefined
  }
})

/**
 * A bulkhead bounds the calls in flight: no simulated process has more than `policy.maxConcurrentCalls`
 * downstream calls in flight at once (a bulkhead is per process by design; a limit across processes is a
 * rate limit). A bulkhead made per call, or placed around something other than the call, does not. Not in
 * {@link all}: add it with a declared `maxConcurrentCalls`.
 */
export const bulkheadBound = make({
  name: "bulkhead-bound",
  description: "no simulated process has more than policy.maxConcurrentCalls downstream calls in flight at once",
  relevant: (e) => e.lane === "downstream" && e.kind === "call",
  onEvent: (e, h) => {
    const bound = h.policy.maxConcurrentCalls
    if (bound === undefined || e.lane !== "downstream" || e.kind !== "call" || typeof e.data?.inFlight !== "number") return undefined
    return e.data.inFlight > bound
      ? `process ${String(e.data.node)} had ${e.data.inFlight} downstream calls in flight at once (bulkhead bound ${bound})`
      : undefined
  }
})

/** Dead letters carry their triage category. */
export const deadLetterCategorised = make({
  name: "dead-letter-categorised",
  description: "every dead-lettered message carries a failure category",
  relevant: (e) => e.kind === "dead-lettered",
  onEvent: (e) => e.kind === "dead-lettered" && (e.data?.category === undefined || e.data.category === "")
    ? `${e.ref ?? "a message"} dead-lettered without a category`
    : undefined
})

/** After healing, everything settles within the bound. */
export const liveness = make({
  name: "liveness",
  description: "after the faults heal, every sent message is final within the stated bound",
  atEnd: ({ pending, endedAt, deadline }) => {
    if (pending.size === 0) return undefined
    const [ref, reason] = [...pending][0]!
    return `${pending.size} message(s) not final by t=${Math.round(endedAt)}ms (bound ${deadline}ms), e.g. ${ref}: ${reason}`
  }
})

/** Every built-in invariant. */
export const all: ReadonlyArray<Invariant> = [
  noLoss,
  noUnexpected,
  noDuplicateEffects,
  orderPerKey,
  noPublishedUncommitted,
  breakerTransitions,
  halfOpenProbes,
  retryWithinPolicy,
  noRetryStorm,
  redeliveryAfterDelay,
  callBudget,
  outageCallBudget,
  permanentNotRetried,
  noInstantDeadLetter,
  noTransientDeadLetters,
  processRuns,
  replayOnce,
  webhookAuthentic,
  webhookDeliveredOnce,
  deadLetterCategorised,
  liveness
]
