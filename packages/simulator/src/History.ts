/**
 * The record of one simulated run: every observable event in order, with the indices the invariants read,
 * and a running hash of the whole trace (two runs of the same scenario must produce the same hash).
 */

/** The lanes of the visual timeline: one per simulated component. */
export type Lane =
  | "sender"
  | "webhook"
  | "transport"
  | "consumer"
  | "database"
  | "relay"
  | "downstream"
  | "breaker"
  | "retry"
  | "idempotency"
  | "dead-letter"
  | "node"
  | "fault"

/** One observable event. `ref` is the workload message it concerns (`w0`, `w1`, … or `forged-…`). */
export interface Event {
  /** Virtual ms since the start of the run. */
  readonly t: number
  readonly lane: Lane
  readonly kind: string
  readonly ref?: string | undefined
  readonly data?: Readonly<Record<string, string | number | boolean | undefined>>
}

/** Renders an event as one timeline line (also what the trace hash covers). */
export const formatEvent = (event: Event): string => {
  const data = event.data === undefined
    ? ""
    : " " + Object.entries(event.data).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${String(v)}`).join(" ")
  return `${event.t.toFixed(3).padStart(10)}ms ${event.lane.padEnd(10)} ${event.kind}${event.ref === undefined ? "" : ` ${event.ref}`}${data}`
}

/** A violated invariant. */
export interface Violation {
  readonly invariant: string
  readonly message: string
  /** Virtual ms when it was detected. */
  readonly at: number
}

const fnv = (hash: number, text: string): number => {
  let h = hash
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

const bump = <K>(map: Map<K, number>, key: K): number => {
  const n = (map.get(key) ?? 0) + 1
  map.set(key, n)
  return n
}

const laneOf = (source: string): Lane => {
  switch (source) {
    case "breaker":
    case "retry":
    case "idempotency":
    case "relay":
      return source
    case "dead-letter":
    case "replay":
      return "dead-letter"
    case "webhook":
      return "webhook"
    case "sender":
      return "sender"
    case "outbox":
      return "relay"
    default:
      return "consumer"
  }
}

/** The declared policies the invariants hold the pipeline to. */
export interface Policy {
  /** Deliveries of one message before it must be dead-lettered. */
  readonly maxDeliveries: number
  /** Attempts of one downstream call per delivery (1 + retries). */
  readonly maxCallAttempts: number
  /** Concurrent probes a half-open breaker may let through; default each breaker's own `permittedProbes`. */
  readonly halfOpenProbes?: number | undefined
  /** Retries of different messages allowed at the same virtual instant before it counts as a synchronised storm. */
  readonly maxSynchronisedRetries: number
  /** Webhook timestamp tolerance in ms. */
  readonly webhookTolerance: number
  /** Topics whose consumer must apply effects in commit order per key. */
  readonly orderedEffects: ReadonlyArray<string>
  /** Downstream calls one message may cause in a whole run; default `maxDeliveries × maxCallAttempts`. */
  readonly maxCallsPerMessage?: number | undefined
  /** Calls the downstream may receive in one virtual second while it is failing. */
  readonly maxFailingCallsPerSecond: number
  /**
   * The rate the downstream may receive calls at, over every process: at most `limit` calls in any window of
   * `windowMillis` (the `downstream-rate-limit` invariant). Default: unbounded.
   */
  readonly downstreamRate?: { readonly limit: number; readonly windowMillis: number } | undefined
  /** Downstream calls one process may have in flight at once (the `bulkhead-bound` invariant). Default: unbounded. */
  readonly maxConcurrentCalls?: number | undefined
  /**
   * The rate the webhook partner may receive requests at, over every process: at most `limit` in any window
   * of `windowMillis` (the `partner-rate-limit` invariant). Default: unbounded.
   */
  readonly partnerRate?: { readonly limit: number; readonly windowMillis: number } | undefined
  /**
   * The entries of the durable dispatcher's schedule: a delivery it gives up as exhausted must have made this
   * many attempts, a permit refused by its own rate limit not counted (the `webhook-exhausted-after-schedule`
   * invariant). Default: not checked.
   */
  readonly webhookAttempts?: number | undefined
}

/** The history of a run and its indices. */
export class History {
  readonly events: Array<Event> = []
  hash = 0x811c9dc5
  frozen = false
  /** Messages the sender tried to deliver. */
  readonly attempted = new Set<string>()
  /** Messages the ingress acknowledged (2xx) to the sender. */
  readonly acknowledged = new Set<string>()
  /** Side effects applied, per effect name and message. */
  readonly effects = new Map<string, Map<string, number>>()
  /** Messages dead-lettered, with their category. */
  readonly deadLettered = new Map<string, string>()
  /** Deliveries per transport message id. */
  readonly deliveries = new Map<string, number>()
  /** Message ids appended to the outbox, and those whose transaction committed. */
  readonly appendedRows = new Set<string>()
  readonly committedRows = new Set<string>()
  /** Last applied commit order per key, per ordered effect. */
  readonly lastOrder = new Map<string, number>()
  /** Calls that reached the failing downstream, per virtual second. */
  readonly failingCalls = new Map<number, number>()
  /** Permanent rejections per message. */
  readonly rejects = new Map<string, number>()
  /** Deliveries consumers saw per message (dead-letter topics aside). */
  readonly deliveriesOf = new Map<string, number>()
  /** Whether a message was retried since its last delivery. */
  readonly retriedSinceDelivery = new Map<string, boolean>()
  /** How many times each message was dead-lettered. */
  readonly deadLetterGenerations = new Map<string, number>()
  /** Replay publishes per message and dead-lettering. */
  readonly replayPublishes = new Map<string, number>()
  /** The last nack per group, topic and message: its attempt and the virtual ms before which it must not return. */
  readonly nackedUntil = new Map<string, { readonly attempt: number; readonly until: number }>()
  /** Messages retried at each virtual instant. */
  readonly retriesAtInstant = new Map<number, Set<string>>()
  /** Fault kinds (and crash sites) that fired. */
  readonly faults = new Map<string, number>()
  readonly violations: Array<Violation> = []
  /** Arrival times of the downstream calls, in time order. */
  readonly downstreamArrivals: Array<number> = []
  /** Arrival times of the partner's requests (a held one from when it left), in time order. */
  readonly partnerArrivals: Array<number> = []
  /** Requests that reached the webhook partner, per `webhook-id`. */
  readonly partnerRequests = new Map<string, number>()
  /** Downstream calls per message. */
  readonly calls = new Map<string, number>()
  /** Times a message was republished from the dead-letter store. */
  readonly replays = new Map<string, number>()
  /** Workload reference per transport message id (to name the message of a package's event). */
  readonly refsById = new Map<string, string>()
  /** Messages the downstream rejects for good: the only ones that may end dead-lettered. */
  readonly poison = new Set<string>()
  readonly observers: Array<(event: Event) => void> = []

  constructor(readonly policy: Policy, readonly now: () => number) {}

  /** Records an event, updates the indices and lets the observers (the invariants) look at it. */
  record(lane: Lane, kind: string, ref?: string, data?: Event["data"]): Event | undefined {
    if (this.frozen) return undefined
    const event: Event = data === undefined ? { t: this.now(), lane, kind, ref } : { t: this.now(), lane, kind, ref, data }
    this.events.push(event)
    this.hash = fnv(this.hash, formatEvent(event))
    for (const observer of this.observers) observer(event)
    return event
  }

  /** Records a side effect; answers how many times it has now been applied. */
  effect(name: string, ref: string, data?: Event["data"]): number {
    let perRef = this.effects.get(name)
    if (perRef === undefined) this.effects.set(name, perRef = new Map())
    const count = bump(perRef, ref)
    this.record(name === "downstream" ? "downstream" : "database", "effect", ref, { name, count, ...data })
    return count
  }

  /** Records a fault that fired. */
  fault(kind: string, ref?: string, data?: Event["data"]): void {
    if (this.frozen) return
    bump(this.faults, kind)
    this.record("fault", kind, ref, data)
  }

  /** Counts a delivery of a transport message. */
  delivered(id: string): number {
    return bump(this.deliveries, id)
  }

  /** Counts a downstream call of a message. */
  call(ref: string): number {
    return bump(this.calls, ref)
  }

  /** Notes that a dead-lettered message was republished: it is no longer final. */
  replayed(ref: string): void {
    bump(this.replays, ref)
    this.deadLettered.delete(ref)
  }

  /** Records an {@link Observe.Event} of a real package, as `source:kind` in the source's lane. */
  observed(event: { readonly source: string; readonly kind: string; readonly attributes: Event["data"] }): void {
    const attributes = event.attributes ?? {}
    const id = attributes.envelopeId ?? attributes.messageId
    const ref = typeof id === "string" ? this.refsById.get(id) : undefined
    this.record(laneOf(event.source), `${event.source}:${event.kind}`, ref, attributes)
  }

  /** Applied count of a message's effect. */
  applied(name: string, ref: string): number {
    return this.effects.get(name)?.get(ref) ?? 0
  }

  /** The trace hash as 8 hex digits. */
  get traceHash(): string {
    return this.hash.toString(16).padStart(8, "0")
  }
}
