/**
 * JetStream's pull protocol for one subscription (`Puller`): pull requests with `no_wait` while messages flow,
 * a long poll with idle heartbeats once drained, requests replaced when they go silent, and the ack subject read
 * for the delivery count and stream sequence.
 */
import { createInbox, type Msg, nanos, type NatsConnection, type Subscription } from "nats"
import { nakImmediately, textEncoder } from "./protocol.js"

/** A message pulled from a consumer, with what its ack subject says about it. */
export interface Pulled {
  readonly msg: Msg
  readonly deliveryCount: number
  readonly streamSequence: number
}

/**
 * Reads `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>` (and the newer
 * form with a domain and account hash after `ACK`).
 */
const parseAckSubject = (reply: string): { readonly deliveryCount: number; readonly streamSequence: number } | undefined => {
  const tokens = reply.split(".")
  const offset = tokens.length === 9 ? 0 : tokens.length >= 11 ? 2 : -1
  if (offset < 0 || tokens[0] !== "$JS" || tokens[1] !== "ACK") return undefined
  const deliveryCount = Number(tokens[4 + offset])
  const streamSequence = Number(tokens[5 + offset])
  return Number.isFinite(deliveryCount) && Number.isFinite(streamSequence) ? { deliveryCount, streamSequence } : undefined
}

export interface PullerOptions {
  readonly batchSize: number
  readonly expires: number
  readonly requestTimeout: number
  /** The consumer's ack wait: how long the server waits before it redelivers a delivery nobody settled. */
  readonly ackWait: number
}

interface PullRequest {
  readonly id: number
  readonly wanted: number
  readonly noWait: boolean
  received: number
  lastActivity: number
}

/**
 * Speaks JetStream's pull protocol for one subscription, keeping a small local buffer.
 *
 * While messages are available it asks with `no_wait` for what it lacks (at most two requests in flight, the
 * buffer plus what is requested never above two batches), so the next batch is on its way while the last is
 * handled, and no request outlives the subscription holding a batch it cannot take (the server would hand such a
 * request redeliveries nobody reads). Once the consumer is drained and the subscriber waits, it long-polls for
 * one message with idle heartbeats; a request that goes silent (a dropped connection) is abandoned and replaced.
 * Passing failures are retried with a backoff; a deleted consumer ends the subscription.
 *
 * A request still open when the connection drops may have been answered into it: the server counts those
 * messages delivered and gives them again only when their ack wait runs out, while newer messages go to the
 * next request at once, so a key's later messages would overtake them. After such a drop it asks for nothing
 * until one ack wait (and a margin) has passed since the reconnect, by when the lost deliveries are due again
 * and the server serves redeliveries ahead of new messages, unless the server is found to count no more
 * deliveries unsettled than this process holds ({@link Puller.unsettled}, {@link Puller.resume}).
 */
export class Puller {
  private buffer: Array<Pulled> = []
  private readonly subscription: Subscription
  private readonly inbox = createInbox()
  private requestIds = 0
  /** Requests in the order they were sent; the server answers them in that order. */
  private inFlight: Array<PullRequest> = []
  /** The last `no_wait` request found nothing: switch to long-polling until messages flow again. */
  private drained = false
  private stopped = false
  private retries = 0
  private warnings: Array<unknown> = []
  private backoffTimer: ReturnType<typeof setTimeout> | undefined
  /** Set while no request may be sent: deliveries may have been lost with a connection. */
  private holdTimer: ReturnType<typeof setTimeout> | undefined
  /** The watchdog gave up on a request that may have been answered into a connection that was dying. */
  private abandoned = false
  /** Between a disconnect and the reconnect: what is sent meanwhile never reaches the server. */
  private offline = false
  /** Counts disconnects and holds, so that a check answered for an earlier one cannot end a later hold. */
  private generation = 0
  /** Pulled and not settled yet (buffered or handed out), by stream sequence, as the server counts them. */
  private readonly held = new Map<number, Pulled>()
  /**
   * Stream sequences settled since the last disconnect while it lasted: the client drops what it was asked to
   * send while disconnected when it dials again, so the server still counts these unsettled.
   */
  private readonly settledOffline = new Set<number>()
  private readonly watchdog: ReturnType<typeof setInterval>
  private waiter: (() => void) | undefined
  failure: unknown = undefined

  constructor(
    private readonly connection: NatsConnection,
    private readonly nextSubject: string,
    private readonly options: PullerOptions
  ) {
    this.subscription = connection.subscribe(`${this.inbox}.*`, {
      callback: (error, msg) => this.onMessage(error, msg)
    })
    this.watchdog = setInterval(() => this.checkInFlight(), Math.max(250, Math.floor(this.heartbeat() / 2)))
    this.pump()
  }

  private heartbeat() {
    return Math.max(500, Math.min(5_000, Math.floor(this.options.expires / 4)))
  }

  /** Registers (or clears) the callback woken when messages or a failure arrive; a waiting subscriber is demand. */
  await(waiter: (() => void) | undefined) {
    this.waiter = waiter
    if (waiter === undefined) return
    // Something may have arrived since the subscriber last looked.
    if (this.buffer.length > 0 || this.failure !== undefined || this.warnings.length > 0) return this.wake()
    this.pump()
  }

  takeAll(): Array<Pulled> {
    const taken = this.buffer
    if (taken.length > 0) {
      this.buffer = []
      this.pump()
    }
    return taken
  }

  drainWarnings(): Array<unknown> {
    if (this.warnings.length === 0) return this.warnings
    const taken = this.warnings
    this.warnings = []
    return taken
  }

  stop() {
    if (this.stopped) return
    this.stopped = true
    clearInterval(this.watchdog)
    if (this.backoffTimer !== undefined) clearTimeout(this.backoffTimer)
    if (this.holdTimer !== undefined) clearTimeout(this.holdTimer)
    this.subscription.unsubscribe()
    // Hand back what was pulled but never emitted, so it is redelivered now rather than after the ack wait.
    const buffered = this.buffer
    this.buffer = []
    this.held.clear()
    for (const pulled of buffered) this.release(pulled.msg)
  }

  /** The connection was lost: settles from now until the reconnect are counted as not arrived. */
  disconnected() {
    this.offline = true
    this.generation++
    this.settledOffline.clear()
  }

  /**
   * After a reconnect: forgets the requests in flight (their connection is gone) and asks again, after one ack
   * wait when one of them (or one the watchdog gave up on) may have been answered into the lost connection.
   * Answers the hold's generation when it holds (for {@link resume}), `undefined` when it asks at once. A hold
   * the connection dropped during keeps its end, under a new generation: the check for it was cut off too.
   */
  renew(): number | undefined {
    this.offline = false
    if (this.stopped) return undefined
    const mayHaveLost = this.inFlight.length > 0 || this.abandoned
    this.abandoned = false
    if (mayHaveLost) {
      this.inFlight = []
      this.drained = false
      this.hold()
    } else if (this.holdTimer !== undefined) {
      this.generation++
    } else {
      return undefined
    }
    return this.generation
  }

  /** Whether the hold of `generation` still stands (no later disconnect, not ended already). */
  holding(generation: number) {
    return !this.stopped && this.holdTimer !== undefined && generation === this.generation
  }

  /**
   * Ends the hold of `generation` early: the server was found to count no more deliveries unsettled than this
   * process holds, so none was lost with the connection.
   */
  resume(generation: number) {
    if (!this.holding(generation)) return
    clearTimeout(this.holdTimer)
    this.holdTimer = undefined
    this.pump()
  }

  /**
   * How many of the consumer's deliveries the server should count unsettled because of this subscription:
   * those pulled and not settled, and those settled while the connection was down (that settle was dropped).
   */
  unsettled() {
    let count = this.held.size
    for (const sequence of this.settledOffline) if (!this.held.has(sequence)) count++
    return count
  }

  /** A delivery of this subscription was settled (ack, nack or term handed to the client). */
  settled(pulled: Pulled) {
    if (this.held.get(pulled.streamSequence) === pulled) this.held.delete(pulled.streamSequence)
    if (this.offline) this.settledOffline.add(pulled.streamSequence)
    else this.settledOffline.delete(pulled.streamSequence)
  }

  private hold() {
    // The margin covers the server's redelivery timer firing a little after the ack wait.
    const margin = Math.max(500, Math.floor(this.options.ackWait / 10))
    if (this.holdTimer !== undefined) clearTimeout(this.holdTimer)
    this.generation++
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined
      this.pump()
    }, this.options.ackWait + margin)
  }

  private release(msg: Msg) {
    try {
      msg.respond(nakImmediately)
    } catch {
      // The connection is closed: the server redelivers after the ack wait anyway.
    }
  }

  private wake() {
    const waiter = this.waiter
    this.waiter = undefined
    waiter?.()
  }

  private fail(cause: unknown) {
    this.failure = cause
    this.inFlight = []
    this.wake()
  }

  private pump() {
    if (this.stopped || this.failure !== undefined || this.backoffTimer !== undefined || this.holdTimer !== undefined) return
    if (this.connection.isClosed()) return this.fail(new Error("the NATS connection is closed"))
    let request: PullRequest
    let body: object
    if (this.drained) {
      if (this.inFlight.length > 0 || this.buffer.length > 0 || this.waiter === undefined) return
      request = { id: ++this.requestIds, wanted: 1, noWait: false, received: 0, lastActivity: Date.now() }
      body = { batch: 1, expires: nanos(this.options.expires), idle_heartbeat: nanos(this.heartbeat()) }
    } else {
      const batch = this.options.batchSize
      let outstanding = 0
      for (const r of this.inFlight) outstanding += r.wanted - r.received
      const room = 2 * batch - this.buffer.length - outstanding
      if (this.inFlight.length >= 2 || room * 2 < batch) return
      const wanted = Math.min(batch, room)
      request = { id: ++this.requestIds, wanted, noWait: true, received: 0, lastActivity: Date.now() }
      body = { batch: wanted, no_wait: true }
    }
    try {
      this.connection.publish(this.nextSubject, textEncoder.encode(JSON.stringify(body)), {
        reply: `${this.inbox}.${request.id}`
      })
      this.inFlight.push(request)
    } catch (cause) {
      this.retry(cause)
    }
  }

  private complete(request: PullRequest) {
    const index = this.inFlight.indexOf(request)
    if (index < 0) return
    this.inFlight.splice(index, 1)
    this.retries = 0
    // Answers come in order on one connection: whatever an abandoned earlier request got has arrived by now.
    this.abandoned = false
    if (request.received === 0 && this.buffer.length === 0) this.drained = true
    this.pump()
  }

  private retry(cause: unknown) {
    this.inFlight = []
    this.warnings.push(cause)
    this.wake()
    const delay = Math.min(5_000, 100 * 2 ** Math.min(this.retries++, 6))
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = undefined
      this.pump()
    }, delay)
  }

  /** A request the server stopped answering (lost with a connection, or the server restarted) is replaced. */
  private checkInFlight() {
    const now = Date.now()
    const before = this.inFlight.length
    this.inFlight = this.inFlight.filter((request) =>
      now - request.lastActivity <= (request.noWait ? this.options.requestTimeout : this.heartbeat() * 2 + 1_000)
    )
    if (this.inFlight.length < before) {
      this.drained = false
      this.abandoned = true
    }
    this.pump()
  }

  private onMessage(error: Error | null, msg: Msg) {
    if (this.stopped) {
      if (error === null && msg.reply?.startsWith("$JS.ACK.")) this.release(msg)
      return
    }
    if (error !== null) return this.fail(error)
    const reply = msg.reply
    if (reply !== undefined && reply.startsWith("$JS.ACK.")) {
      const parsed = parseAckSubject(reply)
      if (parsed === undefined) {
        this.warnings.push(new Error(`unrecognised JetStream ack subject ${reply}`))
        this.release(msg)
        return
      }
      const pulled: Pulled = { msg, ...parsed }
      this.buffer.push(pulled)
      this.held.set(pulled.streamSequence, pulled)
      this.drained = false
      // Messages keep their own subject; only status replies name their request. The oldest request is served first.
      const request = this.inFlight[0]
      if (request !== undefined) {
        request.lastActivity = Date.now()
        if (++request.received >= request.wanted) this.complete(request)
      }
      this.wake()
      return
    }
    const id = Number(msg.subject.slice(this.inbox.length + 1))
    const request = this.inFlight.find((r) => r.id === id)
    if (request !== undefined) request.lastActivity = Date.now()
    const code = msg.headers?.code ?? 0
    const description = (msg.headers?.description ?? "").toLowerCase()
    if (code === 100) return // idle heartbeat: the request is alive
    if (code === 404 || code === 408) {
      if (request !== undefined) this.complete(request)
      return
    }
    if (code === 409 && (description.includes("consumer deleted") || description.includes("consumer not found"))) {
      return this.fail(new Error(`consumer gone: ${code} ${description}`))
    }
    // 503 (JetStream not answering, e.g. during a restart), 409 leadership change or max waiting: try again later.
    if (request !== undefined) this.retry(new Error(`pull request answered ${code} ${description}`))
  }
}
