/**
 * The simulated world a pipeline runs in: Bulwark's **real** ports — the memory transport, the memory
 * idempotency store, the memory dead-letter store, the memory replay guard (and, through the pipeline, the
 * real breaker, retry, verifier, ingress, drain and replay) — each behind a decorator that injects the
 * scenario's faults, plus the environment Bulwark does not own: a downstream service, a webhook provider's
 * secret, a skewable wall clock, and simulated processes that crash at any step and restart.
 *
 * Nothing here re-implements a pattern: what the invariants judge is what the real packages did.
 */
import { Delivery as D, Failure, Observe } from "@bulwark/core"
import { DeadLetterStore, type Service as DeadLetterService } from "@bulwark/dead-letter/DeadLetterStore"
import { ReplayedFromHeader } from "@bulwark/dead-letter/Replay"
import * as MemoryDeadLetterStore from "@bulwark/dead-letter/DeadLetterStore/Memory"
import { IdempotencyStore, type Service as IdempotencyService } from "@bulwark/idempotency/IdempotencyStore"
import * as MemoryIdempotencyStore from "@bulwark/idempotency/IdempotencyStore/Memory"
import { fromStore, Outbox } from "@bulwark/outbox/Outbox"
import { OutboxStore } from "@bulwark/outbox/OutboxStore"
import * as MemoryOutbox from "@bulwark/outbox/OutboxStore/Memory"
import { makeMemory as makeMemoryRateLimiterStore, RateLimiterStore } from "@bulwark/resilience/RateLimiterStore"
import * as Memory from "@bulwark/transport/Transport/Memory"
import { DuplicateMessage, type OutgoingMessage, PublishError, Publisher, Subscriber } from "@bulwark/transport/Transport"
import { DispatchStore, type Service as DispatchService } from "@bulwark/webhook/DispatchStore"
import * as MemoryDispatchStore from "@bulwark/webhook/DispatchStore/Memory"
import { HttpEgress } from "@bulwark/webhook/HttpEgress"
import { ReplayGuard } from "@bulwark/webhook/ReplayGuard"
import * as ReplayGuardMemory from "@bulwark/webhook/ReplayGuard"
import {
  Clock,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberId,
  FiberRef,
  Layer,
  Queue,
  Runtime,
  type Scope,
  Stream
} from "effect"
import { globalValue } from "effect/GlobalValue"
import type { History, Lane } from "./History.js"
import type { Fault } from "./Scenario.js"
import { epoch, type VirtualScheduler } from "./Scheduler.js"

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

/** A webhook HTTP request as the receiver sees it: raw body bytes and lower-case headers. */
export interface WebhookRequest {
  readonly body: Uint8Array
  readonly headers: Readonly<Record<string, string>>
}

/** The ports the world provides (see {@link World.layer}). */
export type Ports =
  | Publisher
  | Subscriber
  | IdempotencyStore
  | DeadLetterStore
  | ReplayGuard
  | OutboxStore
  | Outbox
  | MemoryOutbox.MemoryOutboxStore
  | HttpEgress
  | DispatchStore
  | RateLimiterStore

/** The webhook receiver: answers an HTTP status for a request (0: the connection broke, no answer). */
export type Ingress = (request: WebhookRequest) => Effect.Effect<number, never, Ports>

/** A simulated process. Its fibers die together when it crashes; it restarts with its memory lost. */
export class Node {
  /** Bumped by every crash: work of an older incarnation reaches nothing any more. */
  epoch = 0
  up = true
  /** Steps taken over its whole life (crash and stall faults count these). */
  steps = 0
  /** Virtual ms until which a `stall` pauses the process: each of its steps waits for the pause to end. */
  pausedUntil = -1
  crashes = 0
  restarts = 0
  readonly fibers = new Set<Fiber.RuntimeFiber<unknown, unknown>>()
  readonly onCrash: Array<() => void> = []
  /** Starts a fresh incarnation (set by {@link World.spawn}). */
  start: (() => void) | undefined = undefined
  constructor(readonly name: string, readonly index: number) {}
}

interface Incarnation {
  readonly node: Node
  readonly epoch: number
}

/** A 2xx the webhook partner gave, and whether its answer reached the sender (pending while in flight). */
interface PartnerSuccess {
  readonly by: Incarnation | undefined
  answer: "pending" | "heard" | "lost"
}

/** The simulated process the current fiber belongs to (inherited by the fibers it forks). */
export const currentIncarnation: FiberRef.FiberRef<Incarnation | undefined> = globalValue(
  Symbol.for("@bulwark/simulator/World/currentIncarnation"),
  () => FiberRef.unsafeMake<Incarnation | undefined>(undefined)
)

const alive = (incarnation: Incarnation): boolean => incarnation.node.up && incarnation.node.epoch === incarnation.epoch

/** Settings of the world's components; every field has a default. */
export interface WorldOptions {
  /** Transport visibility timeout, ms. Default 30 000. */
  readonly visibilityTimeout?: number
  /** The transport holds a key's next message while one is unsettled. Default true. */
  readonly orderedPerKey?: boolean
  /**
   * The transport drops a publish whose message id it saw within this many ms, answering success — as
   * JetStream's duplicate window does. Default 0 (off).
   */
  readonly dedupeWindow?: number
  /** Downstream latency, ms. Default 20. */
  readonly downstreamLatency?: number
  /** The outbox store leases partitions of keys to relays instead of rows (`partitioned`). Default false. */
  readonly partitionedOutbox?: boolean
  /** The webhook partner's answer latency, ms. Default 20. */
  readonly partnerLatency?: number
  /** How long a publish takes to be confirmed by the broker, ms. Default 1 (others run meanwhile). */
  readonly publishLatency?: number
  /**
   * Moves counted faults (`delay`, `slow`, `reorder`, …) from the site the world applies them at to a site of
   * the pipeline's own, which it reads with {@link World.faultsAt} (e.g. a simulated source API a poller
   * reads: `{ slow: "source" }` makes `slow` faults slow its pages instead of the downstream). Default none.
   */
  readonly faultSites?: Partial<Record<Fault["kind"], string>>
  /** Virtual ms after which all faults are healed. */
  readonly faultWindow: number
  /** Virtual ms by which every `stall` has ended (the simulator leaves half the liveness bound after it). */
  readonly stallsEndBy?: number
}

const decoder = new TextDecoder()

const workloadRef = /^(w\d+|forged-\d+)$/

// A ref in any string field of the data, two levels deep (e.g. a payment id the provider's body carried).
const findRef = (value: unknown, depth: number): string | undefined => {
  if (typeof value === "string") return workloadRef.test(value) ? value : undefined
  if (depth === 0 || typeof value !== "object" || value === null) return undefined
  for (const field of Object.values(value)) {
    const found = findRef(field, depth - 1)
    if (found !== undefined) return found
  }
  return undefined
}

/**
 * The workload reference (`w0`, `w1`, …) a message carries: `data.ref` of its CloudEvent, else any string
 * field of its data (two levels deep) that is one, so a pipeline's own schemas need no extra field.
 */
export const refOf = (payload: Uint8Array): string | undefined => {
  try {
    const json = JSON.parse(decoder.decode(payload)) as { data?: { ref?: unknown } }
    return typeof json.data?.ref === "string" ? json.data.ref : findRef(json.data, 2)
  } catch {
    return undefined
  }
}


/** The simulated world handed to a simulation's pipeline. */
export class World {
  private readonly counters = new Map<string, number>()
  private readonly faultsBySite = new Map<string, Array<Fault>>()
  private readonly crashFaults: Array<Extract<Fault, { kind: "crash" }>>
  private readonly stallFaults: Array<Extract<Fault, { kind: "stall" }>>
  private readonly skew = { ms: 0 }
  private outageUntil = -1
  private partnerDownUntil = -1
  private burst = 0
  private readonly downstreamKeys = new Set<string>()
  private readonly published = new Map<string, number>()
  /** Per topic: each message id's place among the messages of its key, in first-publish order. */
  private readonly orders = new Map<string, number>()
  private readonly keyCounts = new Map<string, number>()
  private readonly commitOrders = new Map<string, number>()
  private readonly commitCounts = new Map<string, number>()
  private readonly subscriptions = new Set<string>()
  /** The hand-over queues of each (topic, group)'s live subscriptions: duplicates go to a competitor. */
  private readonly competitors = new Map<string, Array<Queue.Queue<D.Delivery>>>()
  private readonly seenDeliveries = new Map<string, number>()
  /** Copies the `duplicate` fault handed out per delivered message: the environment's, not a redelivery. */
  private readonly injectedCopies = new Map<string, number>()
  private readonly settledReceipts = new WeakSet<D.Delivery>()
  /** Simulated processes in spawn order. */
  readonly nodes: Array<Node> = []
  readonly poison = new Set<string>()
  /** The webhook provider's signing secret (Standard Webhooks `whsec_`). */
  readonly secret = "whsec_c2ltdWxhdGVkLXByb3ZpZGVyLXNlY3JldC0wMDAwMDA="
  readonly options: Required<WorldOptions>
  private transport: Memory.MemoryTransport | undefined
  private idempotencyStore: MemoryIdempotencyStore.MemoryStore | undefined
  private deadLetterStore: DeadLetterService | undefined
  private replayGuardStore: Context.Tag.Service<ReplayGuard> | undefined
  private outboxStore: MemoryOutbox.MemoryOutboxStoreService | undefined
  private rateLimiterStore: RateLimiterStore["Type"] | undefined
  /** Downstream calls in flight per process incarnation (`name#epoch`; `-` outside any process). */
  private readonly inFlight = new Map<string, number>()
  private readonly dispatchStore: DispatchService = MemoryDispatchStore.unsafeMake()
  /** Per webhook-id: the incarnations whose requests the partner answered 2xx. */
  private readonly partnerSuccesses = new Map<string, Array<PartnerSuccess>>()
  private readonly tables = new Map<string, Map<string, unknown>>()

  constructor(
    readonly scheduler: VirtualScheduler,
    readonly history: History,
    faults: ReadonlyArray<Fault>,
    options: WorldOptions
  ) {
    this.options = {
      visibilityTimeout: 30_000,
      orderedPerKey: true,
      dedupeWindow: 0,
      downstreamLatency: 20,
      partitionedOutbox: false,
      partnerLatency: 20,
      publishLatency: 1,
      faultSites: {},
      stallsEndBy: options.faultWindow + 60_000,
      ...options
    }
    this.crashFaults = faults.filter((f): f is Extract<Fault, { kind: "crash" }> => f.kind === "crash")
    this.stallFaults = faults.filter((f): f is Extract<Fault, { kind: "stall" }> => f.kind === "stall")
    for (const fault of faults) {
      if (!("nth" in fault)) continue
      const site = this.options.faultSites[fault.kind] ?? siteOf(fault.kind)
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

  /** Builds the real stores (they need Effect's clock and random, so they are made inside the run). */
  readonly init: Effect.Effect<void> = Effect.suspend(() =>
    Effect.gen(this, function*() {
      this.transport = yield* Memory.make({
        visibilityTimeout: Duration.millis(this.options.visibilityTimeout),
        orderedPerKey: this.options.orderedPerKey
      })
      this.idempotencyStore = yield* MemoryIdempotencyStore.make()
      this.deadLetterStore = yield* MemoryDeadLetterStore.make
      this.replayGuardStore = yield* ReplayGuardMemory.makeMemory()
      this.outboxStore = yield* MemoryOutbox.make({ name: "simulated", partitioned: this.options.partitionedOutbox })
      this.rateLimiterStore = yield* makeMemoryRateLimiterStore
    })
  )

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
      case "partner":
        this.partnerDownUntil = Math.max(this.partnerDownUntil, Math.min(this.options.faultWindow, this.now + fault.ms))
        this.history.fault("partner", undefined, { until: this.partnerDownUntil })
        return
      case "burst":
        this.burst += fault.count
        this.history.fault("burst", undefined, { count: fault.count })
        return
      case "evict":
        // Eviction as a fault: the real store sweeps every key past its retention now, not lazily.
        if (this.idempotencyStore !== undefined) {
          Effect.runSync(Effect.provide(
            Effect.map(this.idempotencyStore.purgeExpired, (evicted) => this.history.fault("evict", undefined, { evicted })),
            Layer.setClock(this.clockAt(epoch))
          ))
        }
        return
      default:
        return
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Processes and crashes

  /**
   * One step of the current simulated process: any call into the world. A process that has crashed takes no
   * step (its fibers only finish dying); a crash fault due at this step crashes it here, before the call.
   */
  readonly step: Effect.Effect<void> = FiberRef.getWith(currentIncarnation, (incarnation) => {
    if (incarnation === undefined) return Effect.void
    if (!alive(incarnation)) return Effect.interrupt
    const node = incarnation.node
    const step = node.steps++
    if (!this.faulty) {
      return this.pause(node)
    }
    const due = (f: { readonly node: number; readonly step: number }) =>
      this.nodes.length > 0 && f.node % this.nodes.length === node.index && f.step === step
    const fault = this.crashFaults.find(due)
    if (fault !== undefined) {
      this.crash(node, fault.down, step)
      return Effect.interrupt
    }
    const stall = this.stallFaults.find(due)
    if (stall !== undefined) {
      const until = Math.min(this.now + stall.ms, this.options.stallsEndBy)
      node.pausedUntil = Math.max(node.pausedUntil, until)
      this.history.fault("stall", undefined, { node: node.name, step, ms: until - this.now })
    }
    // The whole process is paused, as by a stop-the-world GC pause or a stopped VM: every fiber's next step
    // waits for the pause to end. A crash meanwhile interrupts the waiting fibers with the rest.
    return this.pause(node)
  })

  /**
   * The rest of a process's pause, or nothing. It waits on the scheduler itself: `Effect.sleep` would be a
   * step again (the world's clock counts sleeps as steps) and wait for this same pause. Virtual times are float
   * sums: a remainder below a microsecond counts as over, since waiting it might not move the clock at all.
   */
  private pause(node: Node): Effect.Effect<void> {
    const left = node.pausedUntil - this.now
    if (!(left > 1e-3)) return Effect.void
    return Effect.async<void>((resume) => {
      const handle = this.scheduler.schedule(left, () => resume(Effect.void))
      return Effect.sync(() => this.scheduler.cancel(handle))
    })
  }

  private crash(node: Node, down: number, step: number): void {
    node.epoch++
    node.up = false
    // A process that comes back is a new one: a pause of the one that crashed does not hold it.
    node.pausedUntil = -1
    node.crashes++
    this.history.fault("crash", undefined, { node: node.name, step, down })
    for (const fiber of node.fibers) fiber.unsafeInterruptAsFork(FiberId.none)
    node.fibers.clear()
    for (const onCrash of node.onCrash.splice(0)) onCrash()
    this.scheduler.schedule(down, () => {
      node.up = true
      node.restarts++
      this.history.record("node", "restart", undefined, { node: node.name })
      node.start?.()
    })
  }

  /**
   * Runs `program` as a simulated process named `name`: it may crash at any of its steps (all its fibers are
   * interrupted and what it held in memory is gone; stores and queues keep their state) and is started again
   * from scratch after the fault's down time. A program that ends by itself is recorded (`node exited`),
   * since a long-running loop that stops is what the `process-runs` invariant looks for.
   */
  spawn<E>(name: string, program: Effect.Effect<unknown, E, Scope.Scope>): Effect.Effect<Node, never, Scope.Scope> {
    return Effect.gen(this, function*() {
      const node = new Node(name, this.nodes.length)
      this.nodes.push(node)
      const runtime = yield* Effect.runtime<never>()
      const start = () => {
        const incarnation: Incarnation = { node, epoch: node.epoch }
        const fiber = Runtime.runFork(runtime)(
          Effect.scoped(program).pipe(
            Effect.locally(currentIncarnation, incarnation),
            Effect.exit,
            Effect.flatMap((exit) =>
              Effect.sync(() => {
                if (!alive(incarnation)) return
                this.history.record("node", "exited", undefined, {
                  node: name,
                  how: Exit.isSuccess(exit) ? "returned" : Exit.isInterrupted(exit) ? "interrupted" : "failed",
                  cause: Exit.isFailure(exit) && !Exit.isInterrupted(exit) ? String(exit.cause).slice(0, 200) : undefined
                })
              })
            )
          )
        )
        node.fibers.add(fiber)
        fiber.addObserver(() => node.fibers.delete(fiber))
      }
      node.start = start
      start()
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          node.up = false
          node.epoch++
          for (const fiber of node.fibers) fiber.unsafeInterruptAsFork(FiberId.none)
        })
      )
      return node
    })
  }

  /**
   * Serves one request in the simulated process `node`: the request runs in that process (so it dies with it),
   * and the caller gets 0 — no answer — when the process is down or crashes before answering.
   */
  serve<A>(node: Node, work: Effect.Effect<A>, noAnswer: A): Effect.Effect<A> {
    return Effect.gen(this, function*() {
      if (!node.up) {
        yield* Effect.sleep(Duration.millis(1))
        return noAnswer
      }
      const runtime = yield* Effect.runtime<never>()
      const answer = yield* Deferred.make<A>()
      const incarnation: Incarnation = { node, epoch: node.epoch }
      const onCrash = () => Deferred.unsafeDone(answer, Exit.succeed(noAnswer))
      node.onCrash.push(onCrash)
      // A receiver that dies answers nothing, as a crashed server would: the caller sees no answer.
      const fiber = Runtime.runFork(runtime)(
        work.pipe(
          Effect.locally(currentIncarnation, incarnation),
          Effect.exit,
          Effect.flatMap((exit) => Deferred.succeed(answer, Exit.isSuccess(exit) ? exit.value : noAnswer))
        )
      )
      node.fibers.add(fiber)
      fiber.addObserver(() => node.fibers.delete(fiber))
      const result = yield* Deferred.await(answer)
      const i = node.onCrash.indexOf(onCrash)
      if (i >= 0) node.onCrash.splice(i, 1)
      return result
    })
  }

  // ---------------------------------------------------------------------------------------------------------
  // Clocks

  /** A clock at `epochMillis` plus virtual time (plus the clock-skew faults when `skewed`); sleeps go to `sleep`. */
  private clockAt(epochMillis: number, skewed = false, sleep: Clock.Clock["sleep"] = () => Effect.never): Clock.Clock {
    const millis = () => epochMillis + this.now + (skewed ? this.skew.ms : 0)
    return {
      [Clock.ClockTypeId]: Clock.ClockTypeId,
      unsafeCurrentTimeMillis: millis,
      currentTimeMillis: Effect.sync(millis),
      unsafeCurrentTimeNanos: () => BigInt(millis()) * 1_000_000n,
      currentTimeNanos: Effect.sync(() => BigInt(millis()) * 1_000_000n),
      sleep
    }
  }

  /**
   * The webhook receiver's wall clock: the run's clock shifted by the clock-skew faults. Only the receiver
   * runs on it (a skewed host checking signature timestamps); sleeps still go through the run's scheduler.
   */
  skewedClock(base: Clock.Clock, epochMillis: number): Clock.Clock {
    return this.clockAt(epochMillis, true, (duration) => base.sleep(duration))
  }

  // ---------------------------------------------------------------------------------------------------------
  // Transport: the real memory transport behind a fault-injecting decorator

  private get memory(): Memory.MemoryTransport {
    if (this.transport === undefined) throw new Error("World.init has not run")
    return this.transport
  }

  /** Messages not yet settled, over every topic and group a pipeline subscribed to. */
  pendingMessages(): number {
    let n = 0
    for (const key of this.subscriptions) {
      const [topic, group] = JSON.parse(key) as [string, string]
      n += this.memory.pending(topic, group)
    }
    return n
  }

  /**
   * The order of a message among those of its key on `topic` (0 for the first): its commit order when it
   * came through the outbox, else its first-publish order. What `order-per-key` holds the effects to.
   * Answers -1 for a message never committed or published there.
   */
  orderOf(topic: string, messageId: string): number {
    const id = JSON.stringify([topic, messageId])
    return this.commitOrders.get(id) ?? this.orders.get(id) ?? -1
  }

  /** Gives `message` the next place among its key's messages on `topic` (once; -1 for the unordered key ""). */
  private placeInKey(
    places: Map<string, number>,
    counts: Map<string, number>,
    topic: string,
    message: { readonly id: string; readonly key: string }
  ): void {
    const id = JSON.stringify([topic, message.id])
    if (places.has(id)) return
    const key = JSON.stringify([topic, message.key])
    const n = counts.get(key) ?? 0
    counts.set(key, n + 1)
    places.set(id, message.key === "" ? -1 : n)
  }

  private recordPublish(topic: string, message: OutgoingMessage): void {
    const ref = refOf(message.payload)
    if (this.history.appendedRows.has(message.id)) {
      this.history.record("relay", this.history.committedRows.has(message.id) ? "publish-row" : "publish-uncommitted-row", ref, { topic, id: message.id })
    }
    this.placeInKey(this.orders, this.keyCounts, topic, message)
    const replayedFrom = message.headers[ReplayedFromHeader]
    if (replayedFrom !== undefined && ref !== undefined) {
      this.history.replayed(ref)
      this.history.record("transport", "replay-publish", ref, { topic, entry: replayedFrom })
    }
    this.history.record("transport", "publish", ref, { topic, id: message.id })
  }

  /** The Publisher: the real memory transport; the `partial` fault accepts a prefix of a batch and fails. */
  readonly publisher: Publisher["Type"] = {
    publish: (topic, messages, options) =>
      Effect.zipRight(
        Effect.zipRight(this.step, Effect.sleep(Duration.millis(this.options.publishLatency))),
        Effect.suspend(() => {
          const partial = this.faultsAt("publish").find((f) => f.kind === "partial")
          const accepted = partial !== undefined && partial.kind === "partial"
            ? Math.min(partial.accepted, messages.length)
            : messages.length
          const kept: Array<OutgoingMessage> = []
          let rejected: string | undefined
          for (const message of messages.slice(0, accepted)) {
            const window = this.options.dedupeWindow
            const seen = this.published.get(message.id)
            if (window > 0 && seen !== undefined && this.now - seen < window) {
              // The broker's duplicate window: acknowledged, silently not stored (a failure when asked).
              this.history.record("transport", "deduplicated", refOf(message.payload), { topic, id: message.id })
              if (options?.rejectDuplicates === true) rejected ??= message.id
              continue
            }
            this.published.set(message.id, this.now)
            this.recordPublish(topic, message)
            kept.push(message)
          }
          const stored = kept.length === 0 ? Effect.void : this.memory.publish(topic, kept)
          if (accepted < messages.length) {
            this.history.fault("partial", undefined, { topic, accepted, of: messages.length })
            return Effect.zipRight(stored, Effect.fail(new PublishError({ topic, cause: "partial batch failure" })))
          }
          if (rejected !== undefined) {
            return Effect.zipRight(stored, Effect.fail(new PublishError({ topic, cause: new DuplicateMessage({ id: rejected }) })))
          }
          return stored
        })
      )
  }

  /** Deliveries are counted per replay generation: a republished dead letter starts its deliveries afresh. */
  private deliveredKey(message: D.Delivery["message"]): string {
    const ref = refOf(message.payload)
    return `${message.topic}/${message.id}/${ref === undefined ? 0 : this.history.replays.get(ref) ?? 0}`
  }

  private wrap(delivery: D.Delivery, group: string): D.Delivery {
    const message = delivery.message
    const ref = refOf(message.payload)
    const delivered = this.deliveredKey(message)
    const seen = (this.seenDeliveries.get(delivered) ?? 0) + 1
    this.seenDeliveries.set(delivered, seen)
    this.history.delivered(`${message.topic}/${message.id}`)
    if (ref !== undefined) this.history.refsById.set(message.id, ref)
    const copies = this.injectedCopies.get(delivered)
    this.history.record("transport", "deliver", ref, { topic: message.topic, group, seen, attempt: delivery.attempt, copies })
    // Copies handed by the duplicate fault share one receipt: only the first settle reaches the transport, so
    // only it is recorded (the real transport ignores the others).
    const settled = () => {
      if (this.settledReceipts.has(delivery)) return false
      this.settledReceipts.add(delivery)
      return true
    }
    const settle = <E>(operation: string, effect: Effect.Effect<void, E>, data?: Record<string, number>) =>
      Effect.zipRight(
        this.step,
        Effect.suspend(() => {
          const first = settled()
          return Effect.zipRight(effect, Effect.sync(() => {
            if (first) this.history.record("transport", operation, ref, { topic: message.topic, group, ...data })
          }))
        })
      )
    return {
      message,
      attempt: delivery.attempt,
      ack: settle("ack", delivery.ack),
      // The delay asked for is recorded with the group and attempt: `redelivery-after-delay` holds the
      // transport to it.
      nack: (options) =>
        settle("nack", delivery.nack(options), {
          attempt: delivery.attempt,
          delay: options?.delay === undefined ? 0 : Duration.toMillis(Duration.decode(options.delay))
        }),
      deadLetter: (reason) =>
        Effect.zipRight(
          this.step,
          Effect.suspend(() => {
            const first = settled()
            return Effect.zipRight(
              delivery.deadLetter(reason),
              Effect.sync(() => {
                if (!first) return
                if (ref !== undefined) this.history.deadLettered.set(ref, reason.category)
                this.history.record("transport", "dead-lettered", ref, {
                  topic: message.topic,
                  category: reason.category,
                  classification: reason.error.classification,
                  attempts: reason.attempts
                })
              })
            )
          })
        )
    }
  }

  /**
   * Hands one delivery of the real transport to the consumer through the delivery faults: `drop` (never
   * handed; the real visibility timeout brings it back), `duplicate` (handed again with its own settle),
   * `delay` (handed later), `reorder` (held until the next delivery has been handed, or 100 ms).
   */
  private handOver(
    delivery: D.Delivery,
    group: string,
    out: Queue.Queue<D.Delivery>,
    held: { current: D.Delivery | undefined }
  ): Effect.Effect<void, never, Scope.Scope> {
    return Effect.gen(this, function*() {
      yield* this.step
      const faults = this.faultsAt("deliver")
      const ref = refOf(delivery.message.payload)
      const topic = delivery.message.topic
      const flushHeld = Effect.suspend(() => {
        const waiting = held.current
        held.current = undefined
        return waiting === undefined ? Effect.void : Queue.offer(out, this.wrap(waiting, group))
      })
      if (faults.some((f) => f.kind === "drop")) {
        this.history.fault("drop", ref, { topic })
        return
      }
      const delay = faults.find((f) => f.kind === "delay")
      if (delay !== undefined && delay.kind === "delay") {
        this.history.fault("delay", ref, { topic, ms: delay.ms })
        yield* Effect.forkScoped(Effect.zipRight(Effect.sleep(Duration.millis(delay.ms)), Queue.offer(out, this.wrap(delivery, group))))
        return
      }
      if (faults.some((f) => f.kind === "reorder") && held.current === undefined) {
        this.history.fault("reorder", ref, { topic })
        held.current = delivery
        yield* Effect.forkScoped(Effect.zipRight(Effect.sleep(Duration.millis(100)), flushHeld))
        return
      }
      // A redelivery (visibility timeout, nack) goes to any consumer of the group, as a broker hands it to
      // whichever connection asks next: here the live subscriptions in turn, so it can race the first copy.
      const queues = this.competitors.get(group) ?? []
      const target = delivery.attempt > 1 && queues.length > 1
        ? queues[(queues.indexOf(out) + delivery.attempt - 1) % queues.length] ?? out
        : out
      yield* Queue.offer(target, this.wrap(delivery, group))
      const duplicate = faults.find((f) => f.kind === "duplicate")
      if (duplicate !== undefined && duplicate.kind === "duplicate") {
        this.history.fault("duplicate", ref, { topic, copies: duplicate.copies })
        const delivered = this.deliveredKey(delivery.message)
        this.injectedCopies.set(delivered, (this.injectedCopies.get(delivered) ?? 0) + duplicate.copies)
        // A copy goes to a competing consumer of the same group when there is one (as a broker redelivering
        // to another connection would), so the copies really race; otherwise to the same one.
        const others = queues.filter((q) => q !== out)
        for (let i = 0; i < duplicate.copies; i++) {
          const target = others.length === 0 ? out : others[i % others.length]!
          yield* Effect.forkScoped(Queue.offer(target, this.wrap(delivery, group)))
        }
      }
      yield* flushHeld
    })
  }

  /** The Subscriber: the real memory transport's deliveries, through the delivery faults. */
  get subscriber(): Subscriber["Type"] {
    const port = this.subscriberPort
    return { ...port, features: { ...port.features, visibilityTimeout: Duration.millis(this.options.visibilityTimeout) } }
  }

  private readonly subscriberPort: Subscriber["Type"] = {
    features: {
      orderedPerKey: true,
      delayedNack: true,
      visibilityTimeout: Duration.millis(30_000),
      deadLetterTopic: true,
      consumerGroups: true,
      persistent: true
    },
    subscribe: (topic, options) =>
      Stream.unwrapScoped(Effect.gen(this, function*() {
        const group = JSON.stringify([topic, options?.group ?? "default"])
        this.subscriptions.add(group)
        // One slot: the pump claims from the real transport only when the consumer can take a delivery, so
        // prefetched deliveries do not sit out their visibility timeout in a buffer.
        const out = yield* Queue.bounded<D.Delivery>(1)
        const held = { current: undefined as D.Delivery | undefined }
        const queues = this.competitors.get(group) ?? []
        this.competitors.set(group, [...queues, out])
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => this.competitors.set(group, (this.competitors.get(group) ?? []).filter((q) => q !== out)))
        )
        yield* this.memory.subscribe(topic, options).pipe(
          Stream.runForEach((delivery) => this.handOver(delivery, group, out, held)),
          Effect.scoped,
          Effect.forkScoped
        )
        return Stream.fromQueue(out)
      }))
  }

  // ---------------------------------------------------------------------------------------------------------
  // Stores: the real memory drivers, each call a step of the calling process

  /** The real memory idempotency store; every call is a step (and a crash point) of the calling process. */
  get idempotency(): IdempotencyService {
    const store = this.idempotencyStore!
    return {
      claim: (key, options) => Effect.zipRight(this.step, store.claim(key, options)),
      complete: (key, token, outcome) => Effect.zipRight(this.step, store.complete(key, token, outcome)),
      release: (key, token) => Effect.zipRight(this.step, store.release(key, token)),
      purgeExpired: Effect.zipRight(this.step, store.purgeExpired)
    }
  }

  /** The real memory dead-letter store, each call a step of the calling process. */
  get deadLetters(): DeadLetterService {
    const store = this.deadLetterStore!
    return {
      add: (entry) => Effect.zipRight(this.step, store.add(entry)),
      list: (filter) => Effect.zipRight(this.step, store.list(filter)),
      get: (id) => Effect.zipRight(this.step, store.get(id)),
      depth: Effect.zipRight(this.step, store.depth),
      claimReplay: (id, lease) => Effect.zipRight(this.step, store.claimReplay(id, lease)),
      markReplayed: (id) => Effect.zipRight(this.step, store.markReplayed(id)),
      releaseReplay: (id) => Effect.zipRight(this.step, store.releaseReplay(id)),
      purge: (before) => Effect.zipRight(this.step, store.purge(before)),
      groups: (filter) => Effect.zipRight(this.step, store.groups(filter)),
      takeReplaySlot: (spacing) => Effect.zipRight(this.step, store.takeReplaySlot(spacing))
    }
  }

  /** The real memory replay guard of the webhook ingress, each call a step of the calling process. */
  get replayGuard(): Context.Tag.Service<ReplayGuard> {
    const guard = this.replayGuardStore!
    return {
      claim: (key, lease) => Effect.zipRight(this.step, guard.claim(key, lease)),
      commit: (key, ttl) => Effect.zipRight(this.step, guard.commit(key, ttl)),
      release: (key) => Effect.zipRight(this.step, guard.release(key))
    }
  }

  /**
   * The real memory outbox store (the one `Outbox.append` writes through and `Relay` claims from), each call
   * a step of the calling process. Its transactions are the database's: what a transaction staged (rows,
   * `onCommit` writes) becomes visible at commit, or not at all if the process crashes first. Appended
   * message ids are recorded, so a publish of a row whose transaction never committed is seen.
   */
  get outbox(): MemoryOutbox.MemoryOutboxStoreService {
    const store = this.outboxStore!
    const history = this.history
    return {
      ...store,
      appendMessages: (topic, messages) =>
        Effect.zipRight(
          this.step,
          Effect.tap(store.appendMessages(topic, messages), () =>
            Effect.flatMap(Effect.serviceOption(MemoryOutbox.MemoryTransaction), (tx) => {
              for (const m of messages) history.appendedRows.add(m.id)
              return tx._tag === "Some"
                ? tx.value.onCommit(() => {
                  for (const m of messages) {
                    history.committedRows.add(m.id)
                    // Commit order per key: what a relay must keep when it publishes.
                    this.placeInKey(this.commitOrders, this.commitCounts, topic, m)
                  }
                })
                : Effect.void
            }))
        ),
      backlog: Effect.zipRight(this.step, store.backlog),
      lag: Effect.zipRight(this.step, store.lag),
      drained: Effect.zipRight(this.step, store.drained),
      deadLetters: (limit, topic) => Effect.zipRight(this.step, store.deadLetters(limit, topic)),
      requeueDead: (selection) => Effect.zipRight(this.step, store.requeueDead(selection)),
      claim: (request) => Effect.zipRight(this.step, store.claim(request)),
      markPublished: (relayId, ids, keep) => Effect.zipRight(this.step, store.markPublished(relayId, ids, keep)),
      reschedule: (relayId, id, retry) => Effect.zipRight(this.step, store.reschedule(relayId, id, retry)),
      markDead: (relayId, id, dead) => Effect.zipRight(this.step, store.markDead(relayId, id, dead)),
      renew: (relayId, ids, leaseMillis) => Effect.zipRight(this.step, store.renew(relayId, ids, leaseMillis)),
      cleanup: (retentionMillis) => Effect.zipRight(this.step, store.cleanup(retentionMillis)),
      // A step like any call: a crashed process's relay hands nothing back (a kill runs no shutdown), and its
      // rows wait out their lease; a relay that stops while its process lives hands them back.
      release: (relayId) => Effect.zipRight(this.step, store.release === undefined ? Effect.void : store.release(relayId)),
      transaction: (effect) => Effect.zipRight(this.step, store.transaction(effect))
    }
  }

  /** Outbox rows not yet published (for the end-of-run check). */
  outboxBacklog(): number {
    const store = this.outboxStore
    if (store === undefined) return 0
    return Effect.runSync(Effect.orElseSucceed(store.backlog, () => 1).pipe(Effect.withClock(this.clockAt(epoch))))
  }

  /**
   * A durable table of the simulated database: it survives process crashes. Write to it inside an outbox
   * transaction with `MemoryOutboxStore.onCommit`, so the write commits with the transaction's rows.
   */
  table<V>(name: string): Map<string, V> {
    let table = this.tables.get(name)
    if (table === undefined) {
      table = new Map()
      this.tables.set(name, table)
    }
    return table as Map<string, V>
  }

  /**
   * The real memory rate-limiter store (`@bulwark/resilience`), one for the whole world, each reservation a
   * step of the calling process: limiters made over it in any process share one limit, as instances sharing
   * a Redis or SQL store do. It reads the run's virtual clock.
   */
  get rateLimits(): RateLimiterStore["Type"] {
    const store = this.rateLimiterStore!
    return RateLimiterStore.of({
      reserve: (key, rule, permits, maxWaitMillis) => Effect.zipRight(this.step, store.reserve(key, rule, permits, maxWaitMillis)),
      release: (key, rule, permits, at) => Effect.zipRight(this.step, store.release(key, rule, permits, at))
    })
  }

  private ports: Context.Context<Ports> | undefined

  /** Every port the world provides, as a context (cheaper than a layer to provide per request). */
  get context(): Context.Context<Ports> {
    if (this.ports === undefined) {
      const outbox = this.outbox
      this.ports = Context.make(Publisher, this.publisher).pipe(
        Context.add(Subscriber, this.subscriber),
        Context.add(IdempotencyStore, this.idempotency),
        Context.add(DeadLetterStore, this.deadLetters),
        Context.add(ReplayGuard, this.replayGuard),
        Context.add(OutboxStore, outbox),
        Context.add(MemoryOutbox.MemoryOutboxStore, outbox),
        Context.add(Outbox, fromStore(outbox)),
        Context.add(HttpEgress, this.egress),
        Context.add(DispatchStore, this.dispatches),
        Context.add(RateLimiterStore, this.rateLimits)
      )
    }
    return this.ports
  }

  /**
   * Every port the world provides: transport, idempotency, dead-letter, replay-guard, outbox, webhook
   * dispatch and rate-limiter stores, and the HTTP egress to the simulated webhook partner.
   */
  get layer(): Layer.Layer<Ports> {
    return Layer.succeedContext(this.context)
  }

  // ---------------------------------------------------------------------------------------------------------
  // The downstream service (the environment, not Bulwark's code)

  /**
   * Calls the downstream service for a message. It applies the effect on arrival (once per idempotency key,
   * when one is given), then answers after its latency — so a slow answer can time out although it succeeded.
   * Outages and error bursts answer 503 without applying; poison messages 422.
   *
   * Every arrival is recorded (`downstream call`) with the calling process and how many of its calls are
   * in flight counting this one, until each answers or its caller gives up: what the rate-limit and
   * bulkhead invariants judge.
   */
  callDownstream(request: {
    readonly ref: string
    readonly key: string
    readonly order: number
    readonly idempotencyKey?: string | undefined
  }): Effect.Effect<void, DownstreamError> {
    return Effect.zipRight(
      this.step,
      Effect.flatMap(FiberRef.get(currentIncarnation), (incarnation) => {
        const caller = incarnation === undefined ? "-" : `${incarnation.node.name}#${incarnation.epoch}`
        const inFlight = (this.inFlight.get(caller) ?? 0) + 1
        this.inFlight.set(caller, inFlight)
        this.history.record("downstream", "call", request.ref, { node: incarnation?.node.name, inFlight })
        return Effect.ensuring(
          this.answerDownstream(request),
          Effect.sync(() => {
            const n = (this.inFlight.get(caller) ?? 1) - 1
            if (n === 0) this.inFlight.delete(caller)
            else this.inFlight.set(caller, n)
          })
        )
      })
    )
  }

  private answerDownstream(request: Parameters<World["callDownstream"]>[0]): Effect.Effect<void, DownstreamError> {
    return Effect.suspend(() => {
      const latency = this.options.downstreamLatency
      this.history.call(request.ref)
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

  // ---------------------------------------------------------------------------------------------------------
  // The webhook partner (the environment): the endpoint Bulwark's sender and dispatcher deliver to

  /** The real memory dispatch store (durable: it outlives crashes), each call a step of the calling process. */
  get dispatches(): DispatchService {
    const store = this.dispatchStore
    return {
      putEndpoint: (endpoint) => Effect.zipRight(this.step, store.putEndpoint(endpoint)),
      endpoint: (id) => Effect.zipRight(this.step, store.endpoint(id)),
      endpoints: Effect.zipRight(this.step, store.endpoints),
      updateEndpoint: (id, patch) => Effect.zipRight(this.step, store.updateEndpoint(id, patch)),
      enqueue: (message, endpointIds) => Effect.zipRight(this.step, store.enqueue(message, endpointIds)),
      claim: (request) => Effect.zipRight(this.step, store.claim(request)),
      settle: (token, delivery, attempt, settlement, now) =>
        Effect.zipRight(this.step, store.settle(token, delivery, attempt, settlement, now)),
      attempts: (messageId) => Effect.zipRight(this.step, store.attempts(messageId)),
      deliveries: (filter) => Effect.zipRight(this.step, store.deliveries(filter)),
      requeue: (filter, now) => Effect.zipRight(this.step, store.requeue(filter, now)),
      nextDue: Effect.zipRight(this.step, store.nextDue)
    }
  }

  /**
   * The HTTP egress to the webhook partner: every host resolves to one public address and every POST reaches
   * the partner. The partner is down (503, `Retry-After: 1`) during its own outages (`partner` faults);
   * otherwise it answers 204 after its latency. A 2xx for a `webhook-id` that already had one is
   * recorded as a duplicate delivery, excused only when no earlier success is known to its sender: each went
   * to a process that has crashed since or is paused now (a `stall`: to others it is as good as dead), or its
   * answer never reached the sender, which gave up waiting (it could not record it: Standard Webhooks
   * receivers drop that copy by its id); or when the request itself was held up by its sender's pause at
   * the send, after every check the sender could make.
   */
  get egress(): Context.Tag.Service<HttpEgress> {
    return {
      lookup: () => Effect.zipRight(this.step, Effect.succeed([{ address: "93.184.215.14", family: 4 as const }])),
      post: (request) =>
        Effect.suspend(() => {
          const sentAt = this.now
          return Effect.zipRight(
            this.step,
            Effect.flatMap(FiberRef.get(currentIncarnation), (incarnation) =>
              Effect.suspend(() => {
                const id = request.headers["webhook-id"] ?? ""
                const ref = refOf(request.body) ?? id
                const latency = Duration.millis(this.options.partnerLatency)
                this.webhookRefs.set(id, ref)
                // A request held up by a pause of its sender at the send itself left after every check the sender
                // could make (its rate limit's permit among them), as a request stuck in a socket buffer would:
                // excused like the earlier ones below, and recorded with the time it left (`sentAt`).
                const held = this.now - sentAt > 1e-3
                if (this.faulty && this.now < this.partnerDownUntil) {
                  this.history.record("sender", "partner-unavailable", ref, { id, status: 503, sentAt: held ? sentAt : undefined })
                  return Effect.as(Effect.sleep(latency), { status: 503, headers: { "retry-after": "1" }, excerpt: "unavailable" })
                }
                const earlier = this.partnerSuccesses.get(id) ?? []
                const excused = held || earlier.every((success) =>
                  success.answer === "lost" ||
                  (success.by !== undefined && (!alive(success.by) || success.by.node.pausedUntil - this.now > 1e-3))
                )
                const success: PartnerSuccess = { by: incarnation, answer: "pending" }
                earlier.push(success)
                this.partnerSuccesses.set(id, earlier)
                this.history.record("sender", "partner-2xx", ref, {
                  id,
                  count: earlier.length,
                  excused,
                  node: incarnation?.node.name,
                  sentAt: held ? sentAt : undefined
                })
                // Whether the 2xx reached its sender: one that gave up waiting (its attempt timed out, its process
                // stopped) cannot know the partner has it, and sending it again is the retry Standard Webhooks
                // receivers drop by its id.
                return Effect.sleep(latency).pipe(
                  Effect.onExit((exit) =>
                    Effect.sync(() => {
                      success.answer = Exit.isSuccess(exit) ? "heard" : "lost"
                    })
                  ),
                  Effect.as({ status: 204, headers: {}, excerpt: "" })
                )
              }))
          )
        })
    }
  }

  /** Whether the downstream is failing now (an outage or an error burst within the fault window). */
  get downstreamFailing(): boolean {
    return this.faulty && (this.now < this.outageUntil || this.burst > 0)
  }

  /** Records which lane did what, for pipelines that want their own events in the timeline. */
  note(lane: Lane, kind: string, ref?: string, data?: Record<string, string | number | boolean | undefined>): void {
    this.history.record(lane, kind, ref, data)
  }

  /**
   * The observer that copies the real packages' {@link Observe} events into the history, and follows the
   * in-process `Sender`'s sends (a send between a failed attempt and its end is work still to come).
   */
  readonly observer: Observe.Observer = (event) => {
    if (event.source === "sender") this.followSend(event)
    this.history.observed(event)
    if (event.source === "dispatcher" && event.kind === "message.attempt.exhausted") this.noteExhausted(event)
  }

  /** The workload reference of each `webhook-id` that reached the partner. */
  private readonly webhookRefs = new Map<string, string>()

  /**
   * Follows the dispatcher's `message.attempt.exhausted` with the dispatch store's record of that delivery
   * (`dispatch-exhausted`): its attempts, those refused a permit by the rate limit (no request) and those an
   * open breaker held back (no request either, but counted by the schedule). The exhaustion event carries
   * only the attempt number, which counts every recorded attempt (a dispatcher recording refused permits
   * among them, as one that counted them would, is what the `webhook-exhausted-after-schedule` invariant catches).
   */
  private noteExhausted(event: Observe.Event): void {
    const { endpointId, messageId } = event.attributes
    if (typeof messageId !== "string") return
    const attempts = Effect.runSync(Effect.orElseSucceed(this.dispatchStore.attempts(messageId), () => []))
      .filter((attempt) => attempt.endpointId === endpointId)
    const count = (outcome: string) => attempts.filter((attempt) => attempt.outcome === outcome).length
    this.history.record("sender", "dispatch-exhausted", this.webhookRefs.get(messageId), {
      id: messageId,
      endpoint: typeof endpointId === "string" ? endpointId : undefined,
      attempts: attempts.length,
      rateLimited: count("rate-limited"),
      breakerOpen: count("breaker-open")
    })
  }

  /** In-process sends still retrying: message id → the incarnations sending it. */
  private readonly sendsInFlight = new Map<string, Set<Incarnation>>()

  private followSend(event: Observe.Event): void {
    const id = event.attributes.messageId
    if (typeof id !== "string") return
    const fiber = Fiber.getCurrentFiber()
    const incarnation = fiber._tag === "Some" ? fiber.value.getFiberRef(currentIncarnation) : undefined
    if (incarnation === undefined) return
    const senders = this.sendsInFlight.get(id) ?? new Set<Incarnation>()
    if (event.kind === "attempt" && event.attributes.outcome !== "delivered") senders.add(incarnation)
    else if (event.kind !== "attempt") senders.delete(incarnation)
    if (senders.size === 0) this.sendsInFlight.delete(id)
    else this.sendsInFlight.set(id, senders)
  }

  /**
   * Webhook deliveries still to come: the dispatch store's pending deliveries and the in-process sends of
   * live processes still retrying. The run is not over while there are any.
   */
  outstandingWebhooks(): number {
    let n = Effect.runSync(
      Effect.map(this.dispatchStore.deliveries({ state: "pending", limit: 1 }), (ds) => ds.length).pipe(
        Effect.orElseSucceed(() => 1)
      )
    )
    for (const senders of this.sendsInFlight.values()) {
      for (const incarnation of senders) if (alive(incarnation)) n++
    }
    return n
  }
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
