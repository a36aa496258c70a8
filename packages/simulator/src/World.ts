/**
 * The simulated world a pipeline runs in: a transport (Publisher/Subscriber layer), a database with
 * transactions, an idempotency-key table with retention and an outbox table, a downstream service, a
 * circuit breaker, a retry helper, a webhook signer/verifier, a skewable wall clock and named crash points.
 * Every component reads time from the virtual scheduler and injects the scenario's faults at its sites.
 */
import { createHmac, timingSafeEqual } from "node:crypto"
import { Delivery as D, Failure } from "@bulwark/core"
import { PublishError, Publisher, Subscriber, type OutgoingMessage } from "@bulwark/transport/Transport"
import { Cause, Data, Duration, Effect, Layer, Option, Random, Stream } from "effect"
import type { History, Lane } from "./History.js"
import type { CrashSite, Fault } from "./Scenario.js"
import type { VirtualScheduler } from "./Scheduler.js"

/** A simulated process crash at a named protocol step. The work in progress is abandoned, unsettled. */
export class SimulatedCrash extends Data.TaggedError("SimulatedCrash")<{ readonly site: CrashSite }> {}

/** The downstream answered an error (`status` 503 transient, 422 permanent). */
export class DownstreamError extends Data.TaggedError("DownstreamError")<{
  readonly status: number
  readonly ref: string
}> {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return this.status >= 500
      ? { classification: "transient", category: "dependency" }
      : { classification: "permanent", category: "schema" }
  }
}

/** The circuit breaker is open: the call was not attempted. Transient. */
export class BreakerOpenError extends Data.TaggedError("BreakerOpenError")<{}> {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }
}

/** A webhook HTTP request as the receiver sees it: raw body bytes and headers. */
export interface WebhookRequest {
  readonly body: Uint8Array
  readonly headers: Readonly<Record<string, string>>
}

/** The webhook receiver: answers an HTTP status for a request. */
export type Ingress = (request: WebhookRequest) => Effect.Effect<number>

/** Header names of the simulated webhook provider. */
export const WebhookHeaders = { signature: "webhook-signature", timestamp: "webhook-timestamp" } as const

const encoder = new TextEncoder()
const decoder = new TextDecoder()

interface StoredMessage {
  readonly seq: number
  readonly topic: string
  readonly id: string
  readonly key: string
  readonly payload: Uint8Array
  headers: Record<string, string>
  readonly ref: string | undefined
  state: "ready" | "inflight" | "waiting" | "done"
  attempt: number
  tokens: Set<number>
  skipOnce: boolean
}

interface Topic {
  readonly name: string
  readonly messages: Array<StoredMessage>
  readonly waiters: Array<(delivery: D.Delivery) => void>
  readonly extra: Array<D.Delivery>
}

const refOf = (payload: Uint8Array): string | undefined => {
  try {
    const json = JSON.parse(decoder.decode(payload)) as { data?: { ref?: unknown } }
    return typeof json.data?.ref === "string" ? json.data.ref : undefined
  } catch {
    return undefined
  }
}

/** A database transaction: reads see committed state plus this transaction's own writes. */
export interface Transaction {
  /** Claims an idempotency key: true when it was not recorded (within retention) — atomic with the commit. */
  readonly claim: (key: string) => boolean
  /** Whether a key is recorded (committed), without claiming it. */
  readonly seen: (key: string) => boolean
  /** Records a key unconditionally (no check): correct only after an atomic check in the same transaction. */
  readonly record: (key: string) => void
  /** Records a business side effect, applied only if the transaction commits. */
  readonly effect: (name: string, ref: string) => void
  /** Inserts an outbox row; answers its id. Published by a relay, or by the pipeline itself (the anti-pattern). */
  readonly emit: (row: { readonly ref: string; readonly key: string; readonly payload: unknown }) => OutboxRow
}

/** A committed outbox row. */
export interface OutboxRow {
  readonly id: string
  /** Commit order. */
  readonly order: number
  readonly ref: string
  readonly key: string
  readonly payload: unknown
  published: boolean
}

/** Settings of the world's components; every field has a default. */
export interface WorldOptions {
  /** Transport visibility timeout, ms. Default 30 000. */
  readonly visibilityTimeout?: number
  /** Transport holds a key's next message while one is unsettled. Default true. */
  readonly orderedPerKey?: boolean
  /** Idempotency-key retention, ms. Default 3 600 000. */
  readonly retention?: number
  /** Downstream latency, ms. Default 20. */
  readonly downstreamLatency?: number
  /** Virtual ms after which all faults are healed. */
  readonly faultWindow: number
}

/** Options of the simulated breaker. */
export interface BreakerOptions {
  readonly failureThreshold?: number
  readonly resetTimeout?: number
  /** Concurrent half-open probes; `Infinity` is the stampede anti-pattern. Default 1. */
  readonly halfOpenProbes?: number
}

/** Options of the simulated retry helper. */
export interface RetryOptions {
  /** Attempts in total. Default 3. */
  readonly attempts?: number
  /** First backoff, ms. Default 100. */
  readonly base?: number
  /** Full jitter (a random delay up to the backoff). Default true; false is the synchronising anti-pattern. */
  readonly jitter?: boolean
}

/** The simulated world handed to a simulation's pipeline. */
export class World {
  private readonly counters = new Map<string, number>()
  private readonly faultsBySite = new Map<string, Array<Fault>>()
  private readonly topics = new Map<string, Topic>()
  private token = 0
  private msgSeq = 0
  private rowSeq = 0
  private readonly crashed = new Set<string>()
  private readonly dedupe = new Map<string, number>()
  readonly outbox: Array<OutboxRow> = []
  private dbLock: Effect.Semaphore | undefined
  private readonly skew = { ms: 0 }
  private outageUntil = -1
  private burst = 0
  private readonly downstreamKeys = new Set<string>()
  readonly poison = new Set<string>()
  readonly secret = "whsec_simulated"
  readonly options: Required<WorldOptions>

  constructor(
    readonly scheduler: VirtualScheduler,
    readonly history: History,
    faults: ReadonlyArray<Fault>,
    options: WorldOptions
  ) {
    this.options = {
      visibilityTimeout: 30_000,
      orderedPerKey: true,
      retention: 3_600_000,
      downstreamLatency: 20,
      ...options
    }
    for (const fault of faults) {
      if (!("nth" in fault)) continue
      const site = fault.kind === "crash" ? `crash:${fault.site}` : siteOf(fault.kind)
      const list = this.faultsBySite.get(site) ?? []
      list.push(fault)
      this.faultsBySite.set(site, list)
    }
    for (const fault of faults) {
      if (!("at" in fault) || fault.kind === "forge" || fault.at >= this.options.faultWindow) continue
      scheduler.schedule(fault.at, () => this.timedFault(fault))
    }
    // Heal: skew back to zero at the end of the fault window.
    scheduler.schedule(this.options.faultWindow, () => {
      if (this.skew.ms !== 0) history.record("fault", "heal-skew")
      this.skew.ms = 0
    })
  }

  /** Virtual ms since the start. */
  get now(): number {
    return this.scheduler.now
  }

  /** Whether faults still fire. */
  get faulty(): boolean {
    return this.scheduler.now < this.options.faultWindow
  }

  /** Advances the occurrence counter of a site and answers the faults scheduled for this occurrence (none once healed). */
  faultsAt(site: string): ReadonlyArray<Fault> {
    const n = this.counters.get(site) ?? 0
    this.counters.set(site, n + 1)
    if (!this.faulty) return []
    const list = this.faultsBySite.get(site)
    if (list === undefined) return []
    return list.filter((f) => "nth" in f && f.nth === n)
  }

  private timedFault(fault: Fault): void {
    switch (fault.kind) {
      case "skew":
        this.skew.ms += fault.ms
        this.history.fault("skew", undefined, { ms: fault.ms })
        return
      case "outage":
        this.outageUntil = Math.max(this.outageUntil, Math.min(this.options.faultWindow, this.now + fault.ms))
        this.history.fault("outage", undefined, { until: this.outageUntil })
        return
      case "burst":
        this.burst += fault.count
        this.history.fault("burst", undefined, { count: fault.count })
        return
      case "evict":
        this.history.fault("evict", undefined, { evicted: this.sweep() })
        return
      default:
        return
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Crash points

  /**
   * A named protocol step. When the scenario crashes the process here, the step fails with a defect and the
   * delivery of `messageId` (if any) is abandoned: its later settle calls do nothing, as if the process had died.
   */
  crashPoint(site: CrashSite, messageId?: string, ref?: string): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.faultsAt(`crash:${site}`).length === 0) return Effect.void
      if (messageId !== undefined) this.crashed.add(messageId)
      this.history.fault(`crash:${site}`, ref)
      return Effect.die(new SimulatedCrash({ site }))
    })
  }

  // ---------------------------------------------------------------------------------------------------------
  // Wall clock

  /** The wall clock of the webhook receiver (skewed by the clock-skew faults), epoch ms. */
  wallNow(epochBase: number): number {
    return epochBase + this.now + this.skew.ms
  }

  // ---------------------------------------------------------------------------------------------------------
  // Transport

  private topic(name: string): Topic {
    let topic = this.topics.get(name)
    if (topic === undefined) {
      topic = { name, messages: [], waiters: [], extra: [] }
      this.topics.set(name, topic)
    }
    return topic
  }

  /** Messages not yet settled on a topic (for the end-of-run "pending" reasons). */
  pendingOn(name: string): ReadonlyArray<{ readonly ref: string | undefined; readonly state: string }> {
    return (this.topics.get(name)?.messages ?? []).filter((m) => m.state !== "done")
  }

  /** Topics that exist. */
  topicNames(): ReadonlyArray<string> {
    return [...this.topics.keys()]
  }

  private deliverable(topic: Topic): StoredMessage | undefined {
    const blocked = new Set<string>()
    let skipped: StoredMessage | undefined
    for (const m of topic.messages) {
      if (m.state === "done") continue
      const keyed = this.options.orderedPerKey && m.key !== ""
      if (keyed && blocked.has(m.key)) continue
      if (keyed) blocked.add(m.key)
      if (m.state !== "ready") continue
      if (m.skipOnce) {
        m.skipOnce = false
        skipped = m
        if (keyed) blocked.delete(m.key)
        continue
      }
      return m
    }
    return skipped
  }

  private dispatch(topic: Topic): void {
    while (topic.waiters.length > 0) {
      const extra = topic.extra.shift()
      if (extra !== undefined) {
        topic.waiters.shift()!(extra)
        continue
      }
      const m = this.deliverable(topic)
      if (m === undefined) return
      const faults = this.faultsAt("deliver")
      m.state = "inflight"
      m.attempt++
      const token = this.token++
      m.tokens = new Set([token])
      this.crashed.delete(m.id)
      this.history.delivered(m.id)
      const vt = this.scheduler.schedule(this.options.visibilityTimeout, () => {
        if (m.state === "inflight" && m.tokens.has(token)) {
          m.state = "ready"
          m.tokens = new Set()
          this.history.record("transport", "visibility-timeout", m.ref, { topic: topic.name, id: m.id })
          this.dispatch(topic)
        }
      })
      const delay = faults.find((f) => f.kind === "delay")
      const reorder = faults.find((f) => f.kind === "reorder")
      if (reorder !== undefined) {
        m.state = "ready"
        m.attempt--
        m.skipOnce = true
        this.scheduler.cancel(vt)
        this.history.fault("reorder", m.ref, { topic: topic.name })
        if (this.deliverable(topic) === m) {
          // Nothing else to go first: deliver it after all.
          m.skipOnce = false
        } else continue
      }
      if (delay !== undefined && delay.kind === "delay") {
        m.state = "waiting"
        m.attempt--
        this.scheduler.cancel(vt)
        this.history.fault("delay", m.ref, { topic: topic.name, ms: delay.ms })
        this.scheduler.schedule(delay.ms, () => {
          if (m.state === "waiting") m.state = "ready"
          this.dispatch(topic)
        })
        continue
      }
      this.history.record("transport", "deliver", m.ref, { topic: topic.name, attempt: m.attempt })
      if (faults.some((f) => f.kind === "drop")) {
        this.history.fault("drop", m.ref, { topic: topic.name })
        continue
      }
      const delivery = this.makeDelivery(topic, m, token)
      topic.waiters.shift()!(delivery)
      const dup = faults.find((f) => f.kind === "duplicate")
      if (dup !== undefined && dup.kind === "duplicate") {
        this.history.fault("duplicate", m.ref, { topic: topic.name, copies: dup.copies })
        for (let i = 0; i < dup.copies; i++) {
          const copyToken = this.token++
          m.tokens.add(copyToken)
          this.history.delivered(m.id)
          topic.extra.push(this.makeDelivery(topic, m, copyToken))
        }
      }
    }
  }

  private makeDelivery(topic: Topic, m: StoredMessage, token: number): D.Delivery {
    const settle = (
      operation: "ack" | "nack" | "deadLetter",
      apply: () => void
    ): Effect.Effect<void, D.DeliveryError> =>
      Effect.suspend(() => {
        if (this.crashed.has(m.id)) return Effect.void // the process died: nothing reaches the broker
        if (!m.tokens.has(token) || m.state !== "inflight") {
          return Effect.fail(new D.DeliveryError({ operation, messageId: m.id, cause: "receipt expired" }))
        }
        apply()
        this.dispatch(topic)
        return Effect.void
      })
    const ack = Effect.suspend(() => {
      if (this.faultsAt("crash:after-effect-before-ack").length > 0 && !this.crashed.has(m.id)) {
        this.crashed.add(m.id)
        this.history.fault("crash:after-effect-before-ack", m.ref)
      }
      return settle("ack", () => {
        m.state = "done"
        m.tokens = new Set()
        this.history.record("transport", "ack", m.ref, { topic: topic.name })
      })
    })
    return {
      message: { id: m.id, topic: topic.name, key: m.key, payload: m.payload, headers: m.headers },
      attempt: m.attempt,
      ack,
      nack: (options) =>
        settle("nack", () => {
          const delay = options?.delay === undefined ? 0 : Duration.toMillis(Duration.decode(options.delay))
          m.tokens = new Set()
          m.state = "waiting"
          this.history.record("transport", "nack", m.ref, { topic: topic.name, delay })
          this.scheduler.schedule(delay, () => {
            if (m.state === "waiting") m.state = "ready"
            this.dispatch(topic)
          })
        }),
      deadLetter: (reason) =>
        Effect.zipRight(
          Effect.sync(() => {
            if (this.faultsAt("crash:before-dead-letter").length > 0 && !this.crashed.has(m.id)) {
              this.crashed.add(m.id)
              this.history.fault("crash:before-dead-letter", m.ref)
            }
          }),
          settle("deadLetter", () => {
          m.state = "done"
          m.tokens = new Set()
          this.history.record("transport", "dead-letter", m.ref, { topic: topic.name, category: reason.category })
          this.store(D.deadLetterTopic(topic.name), {
            id: m.id,
            key: m.key,
            payload: m.payload,
            headers: D.deadLetterHeaders(
              { id: m.id, topic: topic.name, key: m.key, payload: m.payload, headers: m.headers },
              reason
            )
          })
        }))
    }
  }

  private store(topicName: string, message: OutgoingMessage): void {
    const topic = this.topic(topicName)
    const ref = refOf(message.payload)
    const stored: StoredMessage = {
      seq: this.msgSeq++,
      topic: topicName,
      id: message.id,
      key: message.key,
      payload: message.payload,
      headers: { ...message.headers },
      ref,
      state: "ready",
      attempt: 0,
      tokens: new Set(),
      skipOnce: false
    }
    if (topicName.endsWith(".dlq")) {
      stored.state = "done"
      const category = message.headers[D.DeadLetterHeaders.category] ?? ""
      if (ref !== undefined) this.history.deadLettered.set(ref, category)
      this.history.record("transport", "dead-lettered", ref, { topic: topicName, category })
    } else {
      this.history.record("transport", "publish", ref, { topic: topicName, row: message.headers["outbox-row"] })
      const row = message.headers["outbox-row"]
      if (row !== undefined) this.history.publishedRows.add(row)
    }
    topic.messages.push(stored)
    this.dispatch(topic)
  }

  /** The simulated Publisher: 1 ms per publish; the partial-batch fault accepts a prefix and then fails. */
  readonly publisher: Publisher["Type"] = {
    publish: (topicName, messages) =>
      Effect.zipRight(
        Effect.sleep(Duration.millis(1)),
        Effect.suspend(() => {
          const partial = this.faultsAt("publish").find((f) => f.kind === "partial")
          const accepted = partial !== undefined && partial.kind === "partial"
            ? Math.min(partial.accepted, messages.length)
            : messages.length
          for (const message of messages.slice(0, accepted)) this.store(topicName, message)
          if (accepted < messages.length) {
            this.history.fault("partial", undefined, { topic: topicName, accepted, of: messages.length })
            return Effect.fail(new PublishError({ topic: topicName, cause: "partial batch failure" }))
          }
          return Effect.void
        })
      )
  }

  /** The simulated Subscriber: competing consumers of one group per topic. */
  readonly subscriber: Subscriber["Type"] = {
    features: {
      orderedPerKey: true,
      delayedNack: true,
      visibilityTimeout: Duration.millis(30_000),
      deadLetterTopic: true,
      consumerGroups: false,
      persistent: true
    },
    subscribe: (topicName) =>
      Stream.repeatEffect(Effect.async<D.Delivery>((resume) => {
        const topic = this.topic(topicName)
        const waiter = (delivery: D.Delivery) => resume(Effect.succeed(delivery))
        topic.waiters.push(waiter)
        this.dispatch(topic)
        return Effect.sync(() => {
          const i = topic.waiters.indexOf(waiter)
          if (i >= 0) topic.waiters.splice(i, 1)
        })
      }))
  }

  /** The transport as a layer: `Transport.Publisher` and `Transport.Subscriber`. */
  get layer(): Layer.Layer<Publisher | Subscriber> {
    return Layer.merge(Layer.succeed(Publisher, this.publisher), Layer.succeed(Subscriber, this.subscriber))
  }

  // ---------------------------------------------------------------------------------------------------------
  // Database, idempotency keys, outbox

  private sweep(): number {
    let evicted = 0
    for (const [key, at] of this.dedupe) {
      if (this.now - at >= this.options.retention) {
        this.dedupe.delete(key)
        evicted++
      }
    }
    return evicted
  }

  /** Starts the store's periodic retention sweep (every 10 s of virtual time). */
  readonly sweeper: Effect.Effect<never> = Effect.forever(
    Effect.zipRight(Effect.sleep(Duration.seconds(10)), Effect.sync(() => this.sweep()))
  )

  /**
   * Runs `body` as one serialisable transaction (2 ms): its writes (claims, effects, outbox rows) apply
   * atomically at commit, or not at all when it fails, crashes or is interrupted.
   */
  transaction<A, E, R>(body: (tx: Transaction) => Effect.Effect<A, E, R>, ref?: string): Effect.Effect<A, E, R> {
    return Effect.suspend(() => {
      this.dbLock ??= Effect.unsafeMakeSemaphore(1)
      return this.dbLock.withPermits(1)(Effect.suspend(() => {
        const claims = new Set<string>()
        const effects: Array<[string, string]> = []
        const rows: Array<OutboxRow> = []
        const tx: Transaction = {
          claim: (key) => {
            if (this.dedupe.has(key) || claims.has(key)) return false
            claims.add(key)
            return true
          },
          seen: (key) => this.dedupe.has(key) || claims.has(key),
          record: (key) => {
            claims.add(key)
          },
          effect: (name, r) => {
            effects.push([name, r])
          },
          emit: (row) => {
            const id = `row-${this.rowSeq++}`
            const outboxRow: OutboxRow = { id, order: -1, ref: row.ref, key: row.key, payload: row.payload, published: false }
            rows.push(outboxRow)
            return outboxRow
          }
        }
        return body(tx).pipe(
          Effect.zipLeft(Effect.sleep(Duration.millis(2))),
          Effect.onExit((exit) =>
            Effect.sync(() => {
              if (exit._tag === "Success") {
                for (const key of claims) this.dedupe.set(key, this.now)
                let order = this.outbox.length
                for (const row of rows) {
                  ;(row as { order: number }).order = order++
                  this.outbox.push(row)
                  this.history.committedRows.add(row.id)
                }
                this.history.record("database", "commit", ref, {
                  claims: claims.size,
                  effects: effects.length,
                  rows: rows.map((r) => r.id).join(",")
                })
                for (const [name, r] of effects) this.history.effect(name, r)
              } else if (claims.size + effects.length + rows.length > 0) {
                for (const row of rows) this.history.rolledBackRows.add(row.id)
                this.history.record("database", "rollback", ref, { rows: rows.map((r) => r.id).join(",") })
              }
            })
          )
        )
      }))
    })
  }

  /** Whether an idempotency key is recorded (outside any transaction: the check-then-set anti-pattern uses it). */
  isRecorded(key: string): Effect.Effect<boolean> {
    return Effect.zipRight(Effect.sleep(Duration.millis(1)), Effect.sync(() => this.dedupe.has(key)))
  }

  /** Records an idempotency key outside any transaction. */
  record(key: string): Effect.Effect<void> {
    return Effect.zipRight(Effect.sleep(Duration.millis(1)), Effect.sync(() => void this.dedupe.set(key, this.now)))
  }

  /** Unpublished committed outbox rows in commit order. */
  unpublished(limit: number): ReadonlyArray<OutboxRow> {
    const out: Array<OutboxRow> = []
    for (const row of this.outbox) {
      if (!row.published) out.push(row)
      if (out.length >= limit) break
    }
    return out
  }

  /** Marks outbox rows published (1 ms). */
  markPublished(rows: ReadonlyArray<OutboxRow>): Effect.Effect<void> {
    return Effect.zipRight(
      Effect.sleep(Duration.millis(1)),
      Effect.sync(() => {
        for (const row of rows) row.published = true
      })
    )
  }

  // ---------------------------------------------------------------------------------------------------------
  // Downstream service, breaker, retry

  /**
   * Calls the downstream service for a message. It applies the effect on arrival (once per idempotency key,
   * when one is given), then answers after its latency — so a slow answer can time out although it succeeded.
   * Outages and error bursts answer 503 without applying; poison messages 422.
   */
  callDownstream(request: {
    readonly ref: string
    readonly key: string
    readonly order: number
    readonly idempotencyKey?: string | undefined
    readonly attempt: number
  }): Effect.Effect<void, DownstreamError> {
    return Effect.suspend(() => {
      const latency = this.options.downstreamLatency
      if (this.poison.has(request.ref)) {
        this.history.record("downstream", "reject", request.ref, { status: 422 })
        return Effect.zipRight(Effect.sleep(Duration.millis(latency)), Effect.fail(new DownstreamError({ status: 422, ref: request.ref })))
      }
      if (this.faulty && (this.now < this.outageUntil || this.burst > 0)) {
        if (this.burst > 0) this.burst--
        this.history.record("downstream", "unavailable", request.ref, { status: 503 })
        return Effect.zipRight(Effect.sleep(Duration.millis(1)), Effect.fail(new DownstreamError({ status: 503, ref: request.ref })))
      }
      const key = request.idempotencyKey
      if (key === undefined || !this.downstreamKeys.has(key)) {
        if (key !== undefined) this.downstreamKeys.add(key)
        this.history.effect("downstream", request.ref, { key: request.key, order: request.order })
      } else {
        this.history.record("downstream", "replayed-key", request.ref)
      }
      // `slow` counts the calls that succeed: the nth of them answers late although it worked.
      const slow = this.faultsAt("downstream").find((f) => f.kind === "slow")
      if (slow !== undefined && slow.kind === "slow") this.history.fault("slow", request.ref, { ms: slow.ms })
      return Effect.sleep(Duration.millis(latency + (slow !== undefined && slow.kind === "slow" ? slow.ms : 0)))
    })
  }

  /** A simulated circuit breaker around an effect; its transitions and probes go into the history. */
  breaker(options: BreakerOptions = {}) {
    const threshold = options.failureThreshold ?? 3
    const resetTimeout = options.resetTimeout ?? 1_000
    const maxProbes = options.halfOpenProbes ?? 1
    let state: "closed" | "open" | "half-open" = "closed"
    let failures = 0
    let openedAt = 0
    let probes = 0
    const to = (next: typeof state) => {
      this.history.record("breaker", "transition", undefined, { from: state, to: next })
      state = next
    }
    return <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | BreakerOpenError, R> =>
      Effect.suspend((): Effect.Effect<A, E | BreakerOpenError, R> => {
        if (state === "open" && this.now - openedAt >= resetTimeout) to("half-open")
        if (state === "open" || (state === "half-open" && probes >= maxProbes)) {
          return Effect.fail(new BreakerOpenError())
        }
        const probing = state === "half-open"
        if (probing) {
          probes++
          this.history.record("breaker", "probe", undefined, { inFlight: probes })
        }
        return effect.pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => {
              if (probing) probes--
              if (exit._tag === "Success") {
                failures = 0
                if (state === "half-open") to("closed")
              } else if (!Cause.isInterruptedOnly(exit.cause) && isTransient(exit.cause)) {
                failures++
                if (state === "half-open" || (state === "closed" && failures >= threshold)) {
                  to("open")
                  openedAt = this.now
                  failures = 0
                  // Like most breakers, the reset timer moves it to half-open even without traffic.
                  this.scheduler.schedule(resetTimeout, () => {
                    if (state === "open" && this.now - openedAt >= resetTimeout) to("half-open")
                  })
                }
              }
            })
          )
        )
      })
  }

  /**
   * Retries an effect that takes the attempt number on transient failures: exponential backoff from
   * `base`, with full jitter unless disabled. Permanent failures are not retried.
   */
  retry(options: RetryOptions = {}) {
    const attempts = Math.max(1, options.attempts ?? 3)
    const base = options.base ?? 100
    const jitter = options.jitter ?? true
    const history = this.history
    const now = () => this.now
    return <A, E, R>(effect: (attempt: number) => Effect.Effect<A, E, R>, ref?: string): Effect.Effect<A, E, R> => {
      const loop = (attempt: number): Effect.Effect<A, E, R> =>
        Effect.catchAll(
          attempt === 1 ? effect(attempt) : Effect.suspend(() => {
            const same = history.retryAt(now())
            history.record("consumer", "retry", ref, { attempt, sameInstant: same })
            return effect(attempt)
          }),
          (error) =>
          Effect.gen(function*() {
            if (attempt >= attempts) return yield* Effect.fail(error)
            const verdict = yield* Failure.classify(error)
            if (verdict.classification === "permanent") return yield* Effect.fail(error)
            const backoff = base * 2 ** (attempt - 1)
            const delay = jitter ? backoff / 2 + (yield* Random.next) * backoff / 2 : backoff
            yield* Effect.sleep(Duration.millis(delay))
            return yield* loop(attempt + 1)
          })
        )
      return loop(1)
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Webhooks

  /** Signs `timestamp.body` with the shared secret (hex HMAC-SHA256), as the simulated provider does. */
  sign(timestamp: string, body: Uint8Array | string): string {
    const text = typeof body === "string" ? body : decoder.decode(body)
    return createHmac("sha256", this.secret).update(`${timestamp}.${text}`).digest("hex")
  }

  /**
   * The correct verifier: HMAC over the raw bytes as received, constant-time compare, timestamp within
   * `tolerance` of the receiver's (possibly skewed) wall clock.
   */
  verify(request: WebhookRequest, wallNowMillis: number, tolerance: number): boolean {
    const timestamp = request.headers[WebhookHeaders.timestamp]
    const signature = request.headers[WebhookHeaders.signature]
    if (timestamp === undefined || signature === undefined) return false
    const expected = encoder.encode(this.sign(timestamp, request.body))
    const given = encoder.encode(signature)
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) return false
    const ts = Number(timestamp)
    return Number.isFinite(ts) && Math.abs(wallNowMillis - ts) <= tolerance
  }

  /** Records which lane did what, for pipelines that want their own events in the timeline. */
  note(lane: Lane, kind: string, ref?: string, data?: Record<string, string | number | boolean | undefined>): void {
    this.history.record(lane, kind, ref, data)
  }
}

// Client errors (permanent) say nothing about the downstream's health, so they do not trip the breaker.
const isTransient = (cause: Cause.Cause<unknown>): boolean => {
  const failure = Cause.failureOption(cause)
  if (Option.isNone(failure)) return true
  const error = failure.value
  return !(Failure.isClassified(error) && error[Failure.ClassifiedTypeId].classification === "permanent")
}

const siteOf = (kind: Fault["kind"]): string => {
  switch (kind) {
    case "drop":
    case "duplicate":
    case "delay":
    case "reorder":
      return "deliver"
    case "corrupt":
    case "replay":
      return "webhook"
    case "slow":
      return "downstream"
    case "partial":
      return "publish"
    default:
      return kind
  }
}
