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
}

/** Builds an invariant. */
export const make = (invariant: Invariant): Invariant => invariant

const workload = (ref: string | undefined): ref is string => ref !== undefined && /^w\d+$/.test(ref)

/** Applied and dead-lettered are exclusive final states. */
export const singleFinalState = make({
  name: "single-final-state",
  description: "every accepted message ends in exactly one final state: applied, or dead-lettered with a category",
  onEvent: (e, h) => {
    if (e.ref === undefined) return undefined
    if ((e.kind === "effect" && e.data?.name === "downstream") || e.kind === "dead-lettered") {
      if (h.applied("downstream", e.ref) > 0 && h.deadLettered.has(e.ref)) {
        return `${e.ref} was both applied and dead-lettered`
      }
    }
    return undefined
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
  onEvent: (e) =>
    e.kind === "effect" && typeof e.data?.count === "number" && e.data.count > 1
      ? `${String(e.data.name)} effect applied ${e.data.count} times for ${e.ref}`
      : undefined
})

/** Per key, downstream effects follow commit order. */
export const orderPerKey = make({
  name: "order-per-key",
  description: "per key, the consumer applies events in the order they were committed",
  onEvent: (e, h) => {
    if (e.kind !== "effect" || e.data?.name !== "downstream" || typeof e.data.order !== "number") return undefined
    const key = String(e.data.key)
    const last = h.lastOrder.get(key)
    h.lastOrder.set(key, Math.max(last ?? -1, e.data.order))
    return last !== undefined && e.data.order < last
      ? `key ${key}: ${e.ref} (commit #${e.data.order}) applied after commit #${last}`
      : undefined
  }
})

/** A published event must come from a committed row. */
export const noPublishedRolledBack = make({
  name: "no-published-rolled-back",
  description: "no event is published whose outbox row was rolled back",
  onEvent: (e, h) => {
    const row = e.data?.row
    if (e.kind === "publish" && typeof row === "string" && h.rolledBackRows.has(row)) return `published rolled-back row ${row}`
    if (e.kind === "rollback" && typeof e.data?.rows === "string") {
      const bad = e.data.rows.split(",").filter((r) => h.publishedRows.has(r))
      if (bad.length > 0) return `rolled back row(s) ${bad.join(", ")} that were already published`
    }
    return undefined
  }
})

/** A committed row must get published. */
export const noCommittedUnpublished = make({
  name: "no-committed-unpublished",
  description: "every committed outbox row is eventually published",
  atEnd: ({ history }) => {
    const missing = [...history.committedRows].filter((r) => !history.publishedRows.has(r))
    return missing.length === 0 ? undefined : `committed but never published: ${missing.join(", ")}`
  }
})

const legal: Record<string, ReadonlyArray<string>> = {
  closed: ["open"],
  open: ["half-open"],
  "half-open": ["closed", "open"]
}

/** The breaker only moves along legal edges. */
export const breakerTransitions = make({
  name: "breaker-transitions",
  description: "breaker transitions are closed→open→half-open→(closed|open)",
  onEvent: (e, h) => {
    if (e.kind !== "transition") return undefined
    const from = String(e.data?.from)
    const to = String(e.data?.to)
    const ok = legal[from]?.includes(to) ?? false
    h.breakerState = to
    return ok ? undefined : `illegal breaker transition ${from} → ${to}`
  }
})

/** A half-open breaker lets through at most the declared probes. */
export const halfOpenProbes = make({
  name: "half-open-probe-bound",
  description: "a half-open breaker lets at most `policy.halfOpenProbes` calls through at once",
  onEvent: (e, h) =>
    e.kind === "probe" && typeof e.data?.inFlight === "number" && e.data.inFlight > h.policy.halfOpenProbes
      ? `${e.data.inFlight} concurrent half-open probes (bound ${h.policy.halfOpenProbes})`
      : undefined
})

/** Retry counts stay within policy. */
export const retryWithinPolicy = make({
  name: "retry-within-policy",
  description: "deliveries per message ≤ policy.maxDeliveries; downstream attempts per delivery ≤ policy.maxCallAttempts",
  onEvent: (e, h) => {
    if (e.kind === "deliver" && typeof e.data?.attempt === "number" && e.data.attempt > h.policy.maxDeliveries) {
      return `${e.ref ?? "message"} delivered ${e.data.attempt} times (policy ${h.policy.maxDeliveries})`
    }
    if (e.kind === "retry" && typeof e.data?.attempt === "number" && e.data.attempt > h.policy.maxCallAttempts) {
      return `${e.ref} called ${e.data.attempt} times in one delivery (policy ${h.policy.maxCallAttempts})`
    }
    return undefined
  }
})

/** Retries of different clients must not land on the same instant (jitter). */
export const noRetryStorm = make({
  name: "no-synchronised-retries",
  description: "no more than policy.maxSynchronisedRetries retries hit the downstream at the same virtual instant",
  onEvent: (e, h) =>
    e.kind === "retry" && typeof e.data?.sameInstant === "number" && e.data.sameInstant > h.policy.maxSynchronisedRetries
      ? `${e.data.sameInstant} retries of different messages at the same instant t=${e.t}ms (jitter missing?)`
      : undefined
})

/** The webhook receiver accepts only authentic, fresh requests. */
export const webhookAuthentic = make({
  name: "webhook-authentic",
  description: "no forged, corrupted or out-of-window webhook request is accepted",
  onEvent: (e) =>
    e.kind === "accepted" && e.data?.authentic === false
      ? `accepted a ${String(e.data.why)} webhook request${e.ref === undefined ? "" : ` for ${e.ref}`}`
      : undefined
})

/** Dead letters carry their triage category. */
export const deadLetterCategorised = make({
  name: "dead-letter-categorised",
  description: "every dead-lettered message carries a failure category",
  onEvent: (e) => e.kind === "dead-lettered" && (e.data?.category === undefined || e.data.category === "")
    ? `${e.ref ?? "a message"} dead-lettered without a category`
    : undefined
})

/** After healing, everything settles within the bound. */
export const liveness = make({
  name: "liveness",
  description: "after the faults heal, every sent message is final and no breaker is left open, within the stated bound",
  atEnd: ({ history, pending, endedAt, deadline }) => {
    if (pending.size > 0) {
      const [ref, reason] = [...pending][0]!
      return `${pending.size} message(s) not final by t=${Math.round(endedAt)}ms (bound ${deadline}ms), e.g. ${ref}: ${reason}`
    }
    // Half-open with no traffic left is as healed as a breaker can be: the next call probes it.
    return history.breakerState !== "open" ? undefined : `breaker still open at the end`
  }
})

/** Every built-in invariant. */
export const all: ReadonlyArray<Invariant> = [
  singleFinalState,
  noLoss,
  noUnexpected,
  noDuplicateEffects,
  orderPerKey,
  noPublishedRolledBack,
  noCommittedUnpublished,
  breakerTransitions,
  halfOpenProbes,
  retryWithinPolicy,
  noRetryStorm,
  webhookAuthentic,
  deadLetterCategorised,
  liveness
]
