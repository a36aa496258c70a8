/**
 * The NATS JetStream driver: the connection (start with retry, reconnect watching) and the consuming sessions
 * (pull requests, deliveries settled through the driver base), assembled with the topology (`topology.ts`) and
 * publishing (`publisher.ts`); shared protocol pieces are in `protocol.ts`.
 */
import { Delivery, Failure } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { Chunk, Duration, Effect, Redacted, Runtime, Schedule, type Scope, Stream } from "effect"
import {
  connect,
  type ConnectionOptions,
  createInbox,
  Events,
  type JetStreamClient,
  type JetStreamManager,
  type Msg,
  nanos,
  type NatsConnection,
  type Subscription
} from "nats"
import * as Names from "./names.js"
import * as Publisher from "./publisher.js"
import * as Topology from "./topology.js"
import type { Options } from "../NatsTransport.js"
import {
  ConnectionError,
  idHeader,
  InvalidMessageError,
  isNoResponders,
  keyHeader,
  msgIdHeader,
  OptionsError,
  redactServer,
  type Resolved,
  resolve
} from "./protocol.js"

export {
  ConnectionError,
  idHeader,
  InvalidMessageError,
  keyHeader,
  msgIdHeader,
  OptionsError,
  redactServer,
  type Resolved
} from "./protocol.js"

/** The NATS connection and the transport built on it. */
export interface NatsTransport extends Transport.Driver {
  readonly connection: NatsConnection
  /** The stream and subject a topic maps to. */
  readonly names: (topic: string) => Names.TopicNames | string
}

/** How many publishes may await their acknowledgement at once. */

const connectTo = (resolved: Resolved, options: Options) =>
  Effect.tryPromise({
    try: () => {
      const connectionOptions: ConnectionOptions = {
        servers: [...resolved.servers],
        timeout: resolved.connectTimeout,
        reconnect: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: resolved.reconnectTimeWait,
        waitOnFirstConnect: false,
        name: options.name ?? "bulwark-transport-nats",
        ...(options.user === undefined ? {} : { user: options.user }),
        ...(options.password === undefined ? {} : { pass: Redacted.value(options.password) }),
        ...(options.token === undefined ? {} : { token: Redacted.value(options.token) })
      }
      return connect(connectionOptions)
    },
    catch: (cause) => new ConnectionError({ servers: resolved.servers.map(redactServer), cause })
  })

const closeConnection = (connection: NatsConnection) =>
  Effect.promise(() => connection.drain().catch(() => undefined)).pipe(
    // Draining waits for the server; a dead server must not hang shutdown.
    Effect.timeout("5 seconds"),
    Effect.ignore,
    Effect.zipRight(Effect.promise(() => connection.close().catch(() => undefined)))
  )

/** Logs connection losses and recoveries; the loop ends by itself when the connection closes. */
const watchConnection = (connection: NatsConnection, servers: ReadonlyArray<string>, onReconnect: () => void) =>
  Effect.map(Effect.runtime<never>(), (runtime) => {
    const log = (effect: Effect.Effect<void>) =>
      Runtime.runFork(runtime)(Effect.annotateLogs(effect, { servers: servers.map(redactServer).join(",") }))
    void (async () => {
      for await (const status of connection.status()) {
        if (status.type === Events.Disconnect) log(Effect.logWarning("NATS connection lost; reconnecting"))
        else if (status.type === Events.Reconnect) {
          log(Effect.logInfo("NATS connection re-established"))
          onReconnect()
        }
        else if (status.type === Events.Error) log(Effect.logWarning("NATS connection error", status.data))
      }
    })().catch(() => undefined)
  })

/**
 * Whether a failed start found the server away (down, restarting, JetStream not up yet) rather than refusing
 * this client (authentication, TLS): only the former is worth waiting for.
 */
const isUnreachable = (error: ConnectionError) => {
  const code = (error.cause as { code?: unknown } | undefined)?.code
  return code === "CONNECTION_REFUSED" || code === "CONNECTION_TIMEOUT" || code === "TIMEOUT" ||
    code === "CONNECTION_CLOSED" || code === "DISCONNECT" || code === "503" || isNoResponders(error.cause)
}

/** Connects and opens the JetStream API; a connection whose JetStream API fails is closed, not left reconnecting. */
const connectJetStream = (resolved: Resolved, options: Options) =>
  Effect.flatMap(connectTo(resolved, options), (connection) =>
    Effect.tryPromise({
      try: () => connection.jetstreamManager({ timeout: resolved.requestTimeout }),
      catch: (cause) => new ConnectionError({ servers: resolved.servers.map(redactServer), cause })
    }).pipe(
      Effect.map((jsm) => ({ connection, jsm })),
      Effect.tapError(() => Effect.promise(() => connection.close().catch(() => undefined)))
    ))

/**
 * Retries the start while the server is away (a process starting during a broker restart), with jittered
 * exponential backoff capped at 5 s, for at most `connectRetry`; one warning says so. Other errors fail at once.
 */
const retryStartup = (resolved: Resolved, options: Options) => {
  const connecting = connectJetStream(resolved, options)
  if (resolved.connectRetry === 0) return connecting
  let warned = false
  return Effect.retry(connecting, Schedule.exponential("100 millis").pipe(
    Schedule.either(Schedule.spaced("5 seconds")),
    Schedule.jittered,
    Schedule.upTo(Duration.millis(resolved.connectRetry)),
    Schedule.whileInput(isUnreachable),
    Schedule.tapInput((error: ConnectionError) =>
      warned ? Effect.void : Effect.sync(() => warned = true).pipe(Effect.zipRight(Effect.logWarning(
        `NATS at ${resolved.servers.map(redactServer).join(", ")} is unreachable; retrying for up to ${Duration.format(Duration.millis(resolved.connectRetry))}`,
        error.message
      ))))
  ))
}

export const make = (options: Options = {}): Effect.Effect<NatsTransport, ConnectionError | OptionsError, Scope.Scope> =>
  Effect.gen(function*() {
    const resolved = yield* resolve(options)
    const { connection, jsm }: { connection: NatsConnection; jsm: JetStreamManager } = yield* Effect.acquireRelease(
      retryStartup(resolved, options),
      ({ connection }) => closeConnection(connection)
    )
    const js: JetStreamClient = connection.jetstream({ timeout: resolved.requestTimeout })
    const pullers = new Set<Puller>()
    // Pull requests waiting on the server may have died with the old connection: ask again at once.
    yield* watchConnection(connection, resolved.servers, () => pullers.forEach((puller) => puller.renew()))

    const features: Transport.Features = {
      orderedPerKey: false,
      delayedNack: true,
      visibilityTimeout: Duration.millis(resolved.ackWait),
      deadLetterTopic: true,
      consumerGroups: true,
      persistent: true,
      ...(resolved.dedupeWindow > 0 ? { dedupeWindow: Duration.millis(resolved.dedupeWindow) } : {})
    }

    const names = (topic: string) => Names.topicNames(resolved.prefix, topic)

    const topology = Topology.make(jsm, resolved)
    const publish = Publisher.make(js, topology, resolved, names)

    const toDelivery = (topic: string, target: Names.TopicNames, pulled: Pulled): Delivery.Delivery => {
      const { msg } = pulled
      const headers: Record<string, string> = {}
      let key = ""
      let id = ""
      if (msg.headers !== undefined) {
        for (const name of msg.headers.keys()) {
          if (name === keyHeader) key = msg.headers.get(name)
          else if (name === msgIdHeader || name === idHeader) id = msg.headers.get(name)
          else if (!name.toLowerCase().startsWith("nats-")) headers[name] = msg.headers.get(name)
        }
      }
      const message: Delivery.Message = {
        id: id === "" ? `${target.stream}:${pulled.streamSequence}` : id,
        topic,
        key,
        // The client hands out a view into its read buffer; a copy is ours to keep.
        payload: new Uint8Array(msg.data),
        headers
      }
      // The driver base guards the settle: the first one wins (JetStream would ignore a second), and a settle that
      // failed (the reply could not be sent, a confirmed ack timed out) may be tried again.
      const respond = (payload: Uint8Array) => Effect.try({ try: () => msg.respond(payload), catch: (cause) => cause })
      return Driver.delivery(message, pulled.deliveryCount, {
        ack: resolved.confirmAcks
          ? Effect.tryPromise({
            try: () => connection.request(msg.reply!, ackPayload, { timeout: resolved.requestTimeout }),
            catch: (cause) => cause
          })
          : respond(ackPayload),
        nack: (delay) => respond(delay > 0 ? nakPayload(delay) : nakImmediately),
        deadLetter: (copy) =>
          publish(Driver.deadLetterTopic(topic), [copy]).pipe(
            // TERM, not ACK: the server stops redelivering and tells its advisories the message was given up on.
            Effect.zipRight(respond(termPayload))
          )
      }, { retryFailedSettle: true })
    }

    /** Too many deliveries without a settlement (a message that kills its consumers): the driver dead-letters it. */
    const exhaustedReason = (attempts: number) =>
      new Delivery.DeadLetterReason({
        category: "timeout",
        attempts,
        error: new Failure.FailureRecord({
          tag: "MaxDeliverExceeded",
          message: `delivered ${attempts} times without being settled (maxDeliver ${resolved.maxDeliver})`,
          classification: "permanent",
          category: "timeout"
        })
      })

    const subscribe = (topic: string, subscribeOptions?: Transport.SubscribeOptions) =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const target = names(topic)
        if (typeof target === "string") {
          return yield* new Transport.SubscribeError({ topic, cause: new InvalidMessageError({ reason: target }) })
        }
        const group = Names.durableName(subscribeOptions?.group ?? "default")
        if (typeof group === "string") {
          return yield* new Transport.SubscribeError({ topic, cause: new InvalidMessageError({ reason: group }) })
        }
        yield* Effect.tryPromise({
          try: () => topology.ensureConsumer(target, group.durable),
          catch: (cause) => new Transport.SubscribeError({ topic, cause })
        })
        const puller = yield* Effect.acquireRelease(
          Effect.sync(() => {
            const created = new Puller(connection, `$JS.API.CONSUMER.MSG.NEXT.${target.stream}.${group.durable}`, {
              batchSize: resolved.batchSize,
              expires: resolved.pullExpires,
              requestTimeout: resolved.requestTimeout
            })
            pullers.add(created)
            return created
          }),
          (p) =>
            Effect.sync(() => {
              pullers.delete(p)
              p.stop()
            })
        )
        const take: Effect.Effect<Chunk.Chunk<Delivery.Delivery>, Transport.SubscribeError> = Effect.gen(function*() {
          while (true) {
            for (const warning of puller.drainWarnings()) {
              yield* Effect.logWarning("NATS pull request failed; retrying", warning).pipe(Effect.annotateLogs({ topic }))
            }
            if (puller.failure !== undefined) {
              return yield* new Transport.SubscribeError({ topic, cause: puller.failure })
            }
            const batch = puller.takeAll()
            if (batch.length > 0) {
              const deliveries: Array<Delivery.Delivery> = []
              for (const pulled of batch) {
                const delivery = toDelivery(topic, target, pulled)
                if (pulled.deliveryCount > resolved.maxDeliver) {
                  yield* delivery.deadLetter(exhaustedReason(pulled.deliveryCount)).pipe(
                    Effect.catchAll((error) =>
                      Effect.zipRight(
                        Effect.logWarning("dead-lettering an exhausted message failed; it will come back", error),
                        Effect.ignore(delivery.nack({ delay: "1 second" }))
                      )
                    )
                  )
                } else {
                  deliveries.push(delivery)
                }
              }
              if (deliveries.length > 0) return Chunk.unsafeFromArray(deliveries)
              continue
            }
            yield* Effect.async<void>((resume) => {
              puller.await(() => resume(Effect.void))
              return Effect.sync(() => puller.await(undefined))
            })
          }
        })
        return Stream.repeatEffectChunk(take)
      }))

    return { connection, features, publish, subscribe, names }
  })

const textEncoder = new TextEncoder()
const ackPayload = textEncoder.encode("+ACK")
const nakImmediately = textEncoder.encode("-NAK")
const termPayload = textEncoder.encode("+TERM")
const nakPayload = (delayMillis: number) =>
  textEncoder.encode(`-NAK ${JSON.stringify({ delay: nanos(Math.ceil(delayMillis)) })}`)

/** A message pulled from a consumer, with what its ack subject says about it. */
interface Pulled {
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

interface PullerOptions {
  readonly batchSize: number
  readonly expires: number
  readonly requestTimeout: number
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
 */
class Puller {
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
    this.subscription.unsubscribe()
    // Hand back what was pulled but never emitted, so it is redelivered now rather than after the ack wait.
    const buffered = this.buffer
    this.buffer = []
    for (const pulled of buffered) this.release(pulled.msg)
  }

  /** Forgets the requests in flight (their connection is gone) and asks again. */
  renew() {
    if (this.stopped || this.inFlight.length === 0) return
    this.inFlight = []
    this.drained = false
    this.pump()
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
    if (this.stopped || this.failure !== undefined || this.backoffTimer !== undefined) return
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
    if (this.inFlight.length < before) this.drained = false
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
      this.buffer.push({ msg, ...parsed })
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
