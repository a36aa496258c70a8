/**
 * The base every transport driver is built on, in the spirit of `@effect/sql`'s `SqlClient.make({ acquirer,
 * compiler })`: a driver supplies its protocol (how to connect, publish, read and settle one message) and this
 * module does the work every driver needs the same way:
 *
 * - {@link supervisedConnection}: one live connection, re-established in the background with a jittered, capped
 *   backoff when it is lost (supervised: `up`/`degraded` in `Supervise.health`, logged once per change);
 * - {@link delivery}: a `Delivery` whose first settle wins (a second one is a no-op, as brokers treat it), with
 *   protocol failures turned into `DeliveryError`;
 * - {@link deadLetterCopy}: the dead-letter copy of a message (`<topic>.dlq`, the reason in its headers);
 * - {@link userHeaders}: a delivered message's headers without the driver's and the broker's reserved ones;
 * - {@link redactUrl}: a broker URL as it may appear in logs and errors;
 * - {@link layer}: the ports (`Publisher`, `Subscriber`, instrumented) and the driver's own service from one `make`;
 * - {@link inRealTime} and {@link batcher}: the broker's timers on the wall clock, and one request per event-loop turn;
 * - {@link retryTransient}: a call retried on a schedule, which only a failure pays for.
 */
import { Delivery, Supervise } from "@bulwark/core"
import { Clock, Context, Deferred, Duration, Effect, Exit, FiberId, Layer, Runtime, type Schedule, type Scope } from "effect"
import { type Driver, type OutgoingMessage, portsOf, type Publisher, redactUrl as redact, type Subscriber } from "./Transport.js"

/** A broker URL as it may appear in errors and logs: the password, if any, is masked. */
export const redactUrl: (url: string) => string = redact

const liveClock = Clock.make()

/**
 * Runs a driver's loop on the wall clock whatever `Clock` the caller's fiber carries: the broker keeps real time
 * (visibility timeouts, delays scored by its clock), and a `TestClock` would otherwise stall the loop.
 */
export const inRealTime = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => Effect.withClock(effect, liveClock)

/**
 * `Effect.retry(effect, options)` on the wall clock, with the same schedule and the same answer, except that
 * the schedule is only set up once the effect has failed with an error `options.while` accepts: a poll that
 * succeeds (every poll of a busy subscription) builds no schedule driver and switches no clock.
 */
export const retryTransient = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  options: { readonly while: (error: E) => boolean; readonly schedule: Schedule.Schedule<unknown, E> }
): Effect.Effect<A, E, R> =>
  Effect.catchAll(effect, (error) => {
    if (!options.while(error)) return Effect.fail(error)
    // The failure just seen is the retry's first: handed to the schedule as it came, then the effect again.
    let replay = true
    return inRealTime(Effect.retry(
      Effect.suspend(() => {
        if (!replay) return effect
        replay = false
        return Effect.fail(error)
      }),
      options
    ))
  })

/**
 * Gathers the calls made in one turn of the event loop into one request (acks or deletes in a batch): the
 * promise of each item resolves when the request that carried it is answered.
 */
export const batcher = <A>(send: (items: ReadonlyArray<A>) => Promise<void>): (item: A) => Promise<void> => {
  let items: Array<A> = []
  let waiters: Array<{ resolve: () => void; reject: (error: unknown) => void }> = []
  const flush = () => {
    const sending = items
    const waiting = waiters
    items = []
    waiters = []
    send(sending).then(
      () => waiting.forEach((w) => w.resolve()),
      (error: unknown) => waiting.forEach((w) => w.reject(error))
    )
  }
  return (item) =>
    new Promise<void>((resolve, reject) => {
      if (items.length === 0) setImmediate(flush)
      items.push(item)
      waiters.push({ resolve, reject })
    })
}

/**
 * Follows requests nobody waits for (`what`: "acknowledgement", "deletion"): a failed one is logged, naming the
 * messages it carried, which the service delivers again; closing the scope waits for every one unanswered.
 * Made once the client is open, so that wait runs before the client closes.
 */
export const unansweredRequests = (
  what: string
): Effect.Effect<(request: Promise<void>, messageIds: ReadonlyArray<string>) => void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<never>()
    const unanswered = new Set<Promise<void>>()
    yield* Effect.addFinalizer(() => Effect.promise(() => Promise.allSettled([...unanswered])))
    return (request, messageIds) => {
      const followed: Promise<void> = request.then(
        () => void unanswered.delete(followed),
        (cause: unknown) => {
          unanswered.delete(followed)
          const which = messageIds.length === 1 ? `message ${messageIds[0]}` : `${messageIds.length} messages (${messageIds.join(", ")})`
          Runtime.runFork(runtime)(Effect.logWarning(`the ${what} of ${which} failed; it will be delivered again`, cause))
        }
      )
      unanswered.add(followed)
    }
  })

/**
 * Gathers the items queued in one turn of the event loop into one request nobody waits for (acks that complete
 * once queued): no promise per item. `follow` hears of each request when its first item is queued, with the
 * message ids it carries, and gets a promise answered when the request is, so a transport waiting on it before
 * it closes its client also waits for items queued and not sent yet.
 */
export const queuedBatcher = <A>(
  send: (items: ReadonlyArray<A>) => Promise<void>,
  follow: (request: Promise<void>, messageIds: ReadonlyArray<string>) => void
): (item: A, messageId: string) => void => {
  let queued: { readonly items: Array<A>; readonly messageIds: Array<string> } | undefined
  return (item, messageId) => {
    if (queued === undefined) {
      const batch = { items: [] as Array<A>, messageIds: [] as Array<string> }
      queued = batch
      follow(
        new Promise<void>((resolve, reject) =>
          setImmediate(() => {
            queued = undefined
            send(batch.items).then(resolve, reject)
          })
        ),
        batch.messageIds
      )
    }
    queued.items.push(item)
    queued.messageIds.push(messageId)
  }
}

/**
 * Splits items into requests of at most `maxItems` items and `maxBytes` bytes (by `size`), in order: the
 * batch limits every cloud queue's API puts on one call. An item larger than `maxBytes` goes alone, for the
 * service to refuse with its own error.
 */
export const chunked = <A>(
  items: ReadonlyArray<A>,
  limits: { readonly maxItems: number; readonly maxBytes: number; readonly size: (item: A) => number }
): Array<Array<A>> => {
  const out: Array<Array<A>> = []
  let current: Array<A> = []
  let bytes = 0
  for (const item of items) {
    const s = limits.size(item)
    if (current.length > 0 && (current.length >= limits.maxItems || bytes + s > limits.maxBytes)) {
      out.push(current)
      current = []
      bytes = 0
    }
    current.push(item)
    bytes += s
  }
  if (current.length > 0) out.push(current)
  return out
}

// ---------------------------------------------------------------------------------------------------------------
// Layer assembly

/**
 * The layer of a driver: `make` runs once (its resources live as long as the layer) and provides the instrumented
 * `Publisher` and `Subscriber`, plus the driver's own service (inspection, topology clean-up) when `options.service`
 * is given, from the same instance.
 */
export function layer<D extends Driver, E, R>(
  make: Effect.Effect<D, E, R>,
  options: { readonly system: string }
): Layer.Layer<Publisher | Subscriber, E, Exclude<R, Scope.Scope>>
export function layer<D extends Driver & S, E, R, Self, S>(
  make: Effect.Effect<D, E, R>,
  options: { readonly system: string; readonly service: Context.Tag<Self, S> }
): Layer.Layer<Publisher | Subscriber | Self, E, Exclude<R, Scope.Scope>>
export function layer<D extends Driver & S, E, R, Self, S>(
  make: Effect.Effect<D, E, R>,
  options: { readonly system: string; readonly service?: Context.Tag<Self, S> }
): Layer.Layer<Publisher | Subscriber | Self, E, Exclude<R, Scope.Scope>> {
  return Layer.scopedContext(Effect.map(make, (driver) => {
    const ports = portsOf(driver, { system: options.system })
    return (options.service === undefined ? ports : Context.add(ports, options.service, driver)) as Context.Context<
      Publisher | Subscriber | Self
    >
  }))
}

// ---------------------------------------------------------------------------------------------------------------
// Deliveries

/** How a driver settles one message with its broker; any failure becomes a `DeliveryError`. */
export interface Settlement {
  /** Removes the message. */
  readonly ack: Effect.Effect<void, unknown>
  /**
   * An ack that cannot fail and completes at once (queued for a later batch request nobody waits for): when
   * given, `ack` runs it synchronously, one step instead of an effect and its error mapping.
   */
  readonly ackQueued?: (() => void) | undefined
  /** Gives the message back, to be delivered again after `delayMillis` (0: at once). */
  readonly nack: (delayMillis: number) => Effect.Effect<void, unknown>
  /**
   * Moves the message to its dead-letter topic: store `copy` (built by {@link deadLetterCopy}) under
   * `Delivery.deadLetterTopic(topic)` and remove the original, the copy first (or both atomically).
   */
  readonly deadLetter: (copy: OutgoingMessage, reason: Delivery.DeadLetterReason) => Effect.Effect<void, unknown>
}

/** Options of {@link delivery}. */
export interface DeliveryOptions {
  /**
   * A settle that failed leaves the delivery unsettled, so it may be tried again (a confirmed ack that timed out).
   * Default false: the first settle is the only one, failed or not, and the broker redelivers.
   */
  readonly retryFailedSettle?: boolean
}

const delayMillisOf = (options: { readonly delay?: Duration.DurationInput } | undefined): number =>
  options?.delay === undefined ? 0 : Math.max(0, Duration.toMillis(Duration.decode(options.delay)))

// A subscription hands out a delivery per message: its state and operations are kept to one object and three
// small functions (they were a state object, an effect and five closures made up front). The operations are own
// properties, so a delivery copied with a spread (`{ ...delivery, ack }`, as a decorator wraps one) keeps them,
// and they settle the original: the first settle still wins across copies.
class OnceDelivery implements Delivery.Delivery {
  private settled = false
  readonly ack: Effect.Effect<void, Delivery.DeliveryError>
  readonly nack: Delivery.Delivery["nack"]
  readonly deadLetter: Delivery.Delivery["deadLetter"]
  constructor(
    readonly message: Delivery.Message,
    readonly attempt: number,
    settlement: Settlement,
    retryFailedSettle: boolean
  ) {
    const queued = settlement.ackQueued
    this.ack = queued !== undefined
      ? Effect.sync(() => {
        if (this.settled) return
        this.settled = true
        // Called on the settlement: a driver may define it as a method.
        settlement.ackQueued!()
      })
      : Effect.suspend(() => this.once("ack", () => settlement.ack, retryFailedSettle))
    this.nack = (options) => Effect.suspend(() => this.once("nack", () => settlement.nack(delayMillisOf(options)), retryFailedSettle))
    this.deadLetter = (reason) =>
      Effect.suspend(() => this.once("deadLetter", () => settlement.deadLetter(deadLetterCopy(message, reason), reason), retryFailedSettle))
  }

  private once(
    operation: Delivery.DeliveryError["operation"],
    body: () => Effect.Effect<void, unknown>,
    retryFailedSettle: boolean
  ): Effect.Effect<void, Delivery.DeliveryError> {
    if (this.settled) return Effect.void
    this.settled = true
    return Effect.mapError(body(), (cause) => {
      if (retryFailedSettle) this.settled = false
      return cause instanceof Delivery.DeliveryError ? cause : new Delivery.DeliveryError({ operation, messageId: this.message.id, cause })
    })
  }
}

/**
 * A `Delivery` over a driver's {@link Settlement}. The first settle wins: a second `ack`, `nack` or `deadLetter` of
 * one delivery does nothing (a second settle of one delivery tag would make RabbitMQ close the channel with every
 * other delivery in flight on it). `deadLetter` hands the driver the copy with the reason in its headers.
 */
export const delivery = (
  message: Delivery.Message,
  attempt: number,
  settlement: Settlement,
  options: DeliveryOptions = {}
): Delivery.Delivery => new OnceDelivery(message, attempt, settlement, options.retryFailedSettle === true)

/** The copy a dead-lettered message leaves on `Delivery.deadLetterTopic(topic)`: same id, key and payload, the reason in its headers. */
export const deadLetterCopy = (message: Delivery.Message, reason: Delivery.DeadLetterReason): OutgoingMessage => ({
  id: message.id,
  key: message.key,
  payload: message.payload,
  headers: Delivery.deadLetterHeaders(message, reason)
})

/** The topic a dead-letter copy goes to. */
export const deadLetterTopic: (topic: string) => string = Delivery.deadLetterTopic

/**
 * A delivered message's headers: every string-convertible header whose name `reserved` does not claim (the
 * driver's own bookkeeping, the broker's). Values that are not strings are converted (`Buffer`s as UTF-8).
 */
export const userHeaders = (
  raw: Readonly<Record<string, unknown>> | undefined,
  reserved: (name: string) => boolean
): Record<string, string> => {
  const headers: Record<string, string> = {}
  if (raw === undefined) return headers
  for (const name in raw) {
    if (reserved(name)) continue
    const value = headerValue(raw[name])
    if (value !== undefined) setHeader(headers, name, value)
  }
  return headers
}

/** Sets a header, defined rather than assigned: a header named `__proto__` stays a header. */
export const setHeader = (headers: Record<string, string>, name: string, value: string): void => {
  if (name === "__proto__") Object.defineProperty(headers, name, { value, enumerable: true, writable: true, configurable: true })
  else headers[name] = value
}

const utf8 = new TextDecoder()

/** One header value as a string; `undefined` for a missing one. */
export const headerValue = (value: unknown): string | undefined => {
  if (value === undefined || value === null) return undefined
  if (typeof value === "string") return value
  if (value instanceof Uint8Array) return utf8.decode(value)
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value)
  return JSON.stringify(value)
}

/** A `reserved` predicate for {@link userHeaders}: these exact names, and any name starting with one of `prefixes` (case-insensitive). */
export const reservedHeaders = (names: Iterable<string>, prefixes: ReadonlyArray<string> = []): (name: string) => boolean => {
  const exact = new Set(names)
  const lower = prefixes.map((prefix) => prefix.toLowerCase())
  return (name) => exact.has(name) || (lower.length > 0 && lower.some((prefix) => name.toLowerCase().startsWith(prefix)))
}

// ---------------------------------------------------------------------------------------------------------------
// Connection supervision

/** What {@link supervisedConnection} needs from a driver's protocol. */
export interface ConnectionOptions<C, E> {
  /** The loop's name in logs and `Supervise.health` (e.g. `transport-amqp:connection`); say where, with {@link redactUrl}. */
  readonly name: string
  /** One connection attempt, bounded by the driver; fails typed (a driver's `XxxConnectionError`). */
  readonly connect: Effect.Effect<C, E>
  /** Completes when this connection is gone (closed by the broker, the network, or the driver). */
  readonly lost: (connection: C) => Effect.Effect<void>
  /** Closes a connection (quietly: one already gone is fine). */
  readonly close: (connection: C) => Effect.Effect<void>
  /** How long {@link SupervisedConnection.current} waits for a reconnection before failing with `timeout()`. */
  readonly waitFor: Duration.DurationInput
  /** The error of a wait for a reconnection that took longer than `waitFor`. */
  readonly timeout: () => E
  /** The first backoff after a failed attempt; doubles per failure. Default 100 ms. */
  readonly backoffBase?: Duration.DurationInput
  /** The longest backoff between attempts. Default 2 s. */
  readonly backoffMax?: Duration.DurationInput
}

/** A connection kept alive by {@link supervisedConnection}. */
export interface SupervisedConnection<C, E> {
  /** The live connection; while a lost one is being re-established, waits for it up to `waitFor`. */
  readonly current: Effect.Effect<C, E>
  /** The live connection, waiting as long as it takes. */
  readonly await: Effect.Effect<C>
  /** The live connection if there is one now. */
  readonly live: () => C | undefined
}

/**
 * Connects once (failing with the driver's error if that first attempt fails: a misconfigured URL should stop the
 * program's start) and keeps the connection: when it is lost, a supervised loop reconnects with a jittered,
 * capped backoff, logging the loss and the recovery once each, until the scope closes. The connection is closed
 * with the scope.
 */
export const supervisedConnection = <C, E>(
  options: ConnectionOptions<C, E>
): Effect.Effect<SupervisedConnection<C, E>, E, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const state = {
      live: undefined as C | undefined,
      ready: Deferred.unsafeMake<C>(FiberId.none),
      closing: false
    }
    const install = (connection: C) => {
      state.live = connection
      Deferred.unsafeDone(state.ready, Exit.succeed(connection))
    }
    const forget = (connection: C) =>
      Effect.sync(() => {
        if (state.live === connection) {
          state.live = undefined
          state.ready = Deferred.unsafeMake(FiberId.none)
        }
      })

    install(yield* options.connect)
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        state.closing = true
        return state.live === undefined ? Effect.void : options.close(state.live)
      })
    )

    const supervisor = yield* Supervise.make({
      name: options.name,
      backoffBase: options.backoffBase ?? "100 millis",
      backoffMax: options.backoffMax ?? "2 seconds"
    })
    yield* Effect.addFinalizer(() => supervisor.release)
    const reconnect: Effect.Effect<C> = Effect.catchAll(
      options.connect,
      (error) => Effect.zipRight(supervisor.degraded(error), Effect.suspend(() => reconnect))
    )
    yield* Effect.forkIn(
      Effect.forever(Effect.gen(function*() {
        const connection = state.live!
        yield* options.lost(connection)
        yield* forget(connection)
        if (state.closing) return yield* Effect.never
        // The loss itself counts as the first fault: logged once, then only the recovery is.
        yield* supervisor.degraded(new Error(`${options.name}: connection lost; reconnecting`))
        install(yield* reconnect)
        yield* supervisor.up
      })),
      scope
    )

    const awaitLive = Effect.suspend(() => Deferred.await(state.ready))
    const waitFor = Duration.decode(options.waitFor)
    return {
      await: awaitLive,
      live: () => state.live,
      current: Effect.suspend(() =>
        // Every publish passes here: a live connection needs no timer racing it.
        state.live !== undefined
          ? Effect.succeed(state.live)
          : Effect.timeoutFail(awaitLive, { duration: waitFor, onTimeout: options.timeout })
      )
    }
  })
