import { Delivery } from "@bulwark/core"
import type { Features, OutgoingMessage, SubscribeOptions } from "@bulwark/transport/Transport"
import { PublishError, redactUrl as redact, SubscribeError } from "@bulwark/transport/Transport"
import amqp from "amqplib"
import { Cause, Data, Deferred, Duration, Effect, Exit, FiberId, Option, Runtime, Schedule, Scope, Stream } from "effect"
import type { Options } from "../AmqpTransport.js"

/** The server could not be reached (or refused the login) within the connect timeout. */
export class AmqpConnectionError extends Data.TaggedError("AmqpConnectionError")<{
  /** The URL with its password masked. */
  readonly url: string
  readonly cause: unknown
}> {
  override get message(): string {
    return `cannot connect to RabbitMQ at ${this.url}: ${describe(this.cause)}`
  }
}

/** A broker operation outside publish/subscribe (deleting topology) failed. */
export class AmqpOperationError extends Data.TaggedError("AmqpOperationError")<{
  readonly operation: string
  readonly cause: unknown
}> {
  override get message(): string {
    return `${this.operation} failed: ${describe(this.cause)}`
  }
}

export const defaultUrl = "amqp://guest:guest@127.0.0.1:5672"

/** Header names the driver keeps to itself: they never show up in `Message.headers`. */
export const InternalHeaders = {
  key: "bulwark-amqp-key",
  deliveries: "bulwark-amqp-deliveries"
} as const

/** Headers the broker adds on dead-lettering and redelivery; dropped from `Message.headers` and from republished copies. */
const brokerHeaders = new Set([
  "x-death",
  "x-first-death-exchange",
  "x-first-death-queue",
  "x-first-death-reason",
  "x-last-death-exchange",
  "x-last-death-queue",
  "x-last-death-reason",
  "x-delivery-count"
])

const describe = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

/** The URL as it may appear in errors and logs. */
export const redactUrl = redact

const withHeartbeat = (url: string, seconds: number): string => {
  try {
    const parsed = new URL(url)
    if (parsed.searchParams.has("heartbeat")) return url
    parsed.searchParams.set("heartbeat", String(seconds))
    return parsed.toString()
  } catch {
    return url
  }
}

/** The exchange of a topic. */
export const exchangeName = (topic: string) => topic
/** The durable queue of a (topic, group). */
export const queueName = (topic: string, group: string) => `${topic}/${group}`
/** The TTL queue that holds a group's messages nacked with `delay` until they flow back to its queue. */
export const delayQueueName = (topic: string, group: string, millis: number) => `${queueName(topic, group)}/delay-${millis}ms`

/**
 * Delay queues are shared by every message nacked with the same delay, so delays are rounded up to two
 * significant digits (at most 10% later, never earlier) to bound how many such queues exist.
 */
export const delayBucket = (millis: number): number => {
  if (millis <= 0) return 0
  const whole = Math.ceil(millis)
  const step = whole < 100 ? 1 : 10 ** (Math.floor(Math.log10(whole)) - 1)
  return Math.ceil(whole / step) * step
}

const isDeadLetterTopic = (topic: string) => topic.endsWith(".dlq")

/** Broker replies that no retry will fix: access refused, not found, precondition (argument mismatch), not allowed. */
const isPermanent = (cause: unknown) => {
  const code = (cause as { code?: unknown } | null)?.code
  return code === 403 || code === 404 || code === 405 || code === 406 || code === 530
}

const headerValue = (value: unknown): string | undefined => {
  if (value === undefined || value === null) return undefined
  if (typeof value === "string") return value
  if (Buffer.isBuffer(value)) return value.toString("utf8")
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value)
  return JSON.stringify(value)
}

const userHeaders = (raw: Record<string, unknown> | undefined): Record<string, string> => {
  const headers: Record<string, string> = {}
  if (raw === undefined) return headers
  for (const name in raw) {
    if (name === InternalHeaders.key || name === InternalHeaders.deliveries || brokerHeaders.has(name)) continue
    const value = headerValue(raw[name])
    if (value !== undefined) headers[name] = value
  }
  return headers
}

/**
 * 1 for the first delivery. Counts every settled-but-failed delivery (each nack republishes with the count in a
 * header) plus one when the broker says this copy was delivered before without being settled (a crash, a lost
 * connection — or a delivery that only sat in a consumer's prefetch buffer). Classic queues flag redelivery but
 * do not count it, so several crashes in a row count as one; quorum queues' `x-delivery-count` is used when present.
 */
export const attemptOf = (message: amqp.Message): number => {
  const headers = message.properties.headers as Record<string, unknown> | undefined
  const previous = Number(headers?.[InternalHeaders.deliveries] ?? 0)
  const brokerCount = headers?.["x-delivery-count"]
  const unsettled = typeof brokerCount === "number" ? brokerCount : message.fields.redelivered ? 1 : 0
  return (Number.isFinite(previous) && previous > 0 ? previous : 0) + 1 + unsettled
}

const toBuffer = (payload: Uint8Array): Buffer =>
  Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)

interface Prepared {
  readonly content: Buffer
  readonly options: amqp.Options.Publish
}

const prepare = (message: OutgoingMessage): Prepared => ({
  content: toBuffer(message.payload),
  options: {
    persistent: true,
    messageId: message.id,
    headers: { ...message.headers, [InternalHeaders.key]: message.key }
  }
})

/** The properties a republished copy keeps, with broker bookkeeping dropped and its delivery count set. */
const republishOptions = (message: amqp.Message, headers: Record<string, unknown>): amqp.Options.Publish => {
  const p = message.properties
  return {
    persistent: true,
    messageId: p.messageId,
    contentType: p.contentType,
    contentEncoding: p.contentEncoding,
    correlationId: p.correlationId,
    type: p.type,
    appId: p.appId,
    timestamp: p.timestamp,
    headers
  }
}

/** Publishes on a confirm channel and succeeds once the broker confirmed every message (honouring back-pressure). */
const publishConfirmed = (
  channel: amqp.ConfirmChannel,
  exchange: string,
  routingKey: string,
  messages: ReadonlyArray<Prepared>
): Effect.Effect<void, unknown> =>
  Effect.async<void, unknown>((resume) => {
    let pending = messages.length
    let finished = false
    let index = 0
    const finish = (exit: Effect.Effect<void, unknown>) => {
      if (finished) return
      finished = true
      channel.removeListener("drain", pump)
      channel.removeListener("close", onClose)
      resume(exit)
    }
    const onClose = () => finish(Effect.fail(new Error("channel closed before every message was confirmed")))
    const onConfirm = (error: unknown) => {
      if (error) finish(Effect.fail(error))
      else if (--pending === 0) finish(Effect.void)
    }
    function pump() {
      while (index < messages.length && !finished) {
        const message = messages[index++]!
        let writable: boolean
        try {
          writable = channel.publish(exchange, routingKey, message.content, message.options, onConfirm)
        } catch (error) {
          return finish(Effect.fail(error))
        }
        if (!writable && index < messages.length) return void channel.once("drain", pump)
      }
    }
    if (pending === 0) return resume(Effect.void)
    channel.once("close", onClose)
    pump()
  })

const promise = <A>(operation: string, thunk: () => PromiseLike<A>) =>
  Effect.tryPromise({ try: thunk, catch: (cause) => new AmqpOperationError({ operation, cause }) })

/** Closes quietly: a channel or connection that is already gone is what we want. */
const closeQuietly = (thing: { close(): Promise<void> }) =>
  Effect.promise(() => Promise.resolve().then(() => thing.close()).catch(() => undefined)).pipe(
    // Finalizers run uninterruptibly; the close itself must stay interruptible or the timeout could not cut it short.
    Effect.interruptible,
    Effect.timeout("5 seconds"),
    Effect.ignore
  )

/**
 * A channel's acks, sent together once the consumer has worked through a burst rather than one frame per message:
 * the run of acked deliveries at the head of what the broker still holds goes out as one `multiple` ack, any others
 * one by one. A `multiple` ack settles every earlier unacknowledged delivery of the channel, so the run stops at the
 * first delivery that is not acked yet (still being handled, or on its way to a nack or dead-letter copy).
 *
 * An ack completes when it is queued here, as it did when amqplib queued the frame: AMQP does not confirm acks, so
 * either way a channel that closes before the frame leaves makes the broker deliver the message again.
 */
class AckBatch {
  channel: amqp.Channel | undefined = undefined
  /** Deliveries the broker holds unacknowledged on this channel, by delivery tag, in delivery (ascending) order. */
  private readonly held = new Map<number, amqp.Message>()
  private readonly queued = new Set<number>()
  private scheduled = false

  constructor(
    private readonly isOpen: () => boolean,
    private readonly onSendFailure: (cause: unknown) => void
  ) {}

  received(message: amqp.Message): void {
    this.held.set(message.fields.deliveryTag, message)
  }

  /** The delivery is settled with the broker some other way (nacked back, or acked after its copy was confirmed). */
  forget(message: amqp.Message): void {
    this.held.delete(message.fields.deliveryTag)
  }

  ack(message: amqp.Message): void {
    this.queued.add(message.fields.deliveryTag)
    if (!this.scheduled) {
      this.scheduled = true
      // A microtask, not a timer: it runs once the consumer's fiber has worked through what is buffered, so the
      // frame still leaves in the same turn as the deliveries it answers, as a raw client's ack would.
      queueMicrotask(this.flush)
    }
  }

  readonly flush = (): void => {
    this.scheduled = false
    const channel = this.channel
    if (this.queued.size === 0 || channel === undefined || !this.isOpen()) {
      // A closed channel's unacknowledged deliveries are back in the queue already; there is nothing left to ack.
      this.queued.clear()
      return
    }
    let upTo: amqp.Message | undefined
    for (const [tag, message] of this.held) {
      if (!this.queued.has(tag)) break
      this.held.delete(tag)
      this.queued.delete(tag)
      upTo = message
    }
    try {
      if (upTo !== undefined) channel.ack(upTo, true)
      for (const tag of this.queued) {
        const message = this.held.get(tag)
        this.held.delete(tag)
        if (message !== undefined) channel.ack(message)
      }
    } catch (cause) {
      this.onSendFailure(cause)
    } finally {
      this.queued.clear()
    }
  }
}

interface SessionState {
  /** The channel is open: settling works. */
  open: boolean
  /** The subscription ended; the channel closes once `unsettled` is empty or the visibility timeout passes. */
  draining: boolean
  consumerTag: string | undefined
  /** Deliveries received on this channel and not yet settled, whether handed to the consumer or still buffered. */
  readonly unsettled: Set<Entry>
  readonly drained: Deferred.Deferred<void>
  readonly acks: AckBatch
}

interface Entry {
  readonly raw: amqp.ConsumeMessage
  readonly session: SessionState
  readonly delivery: Delivery.Delivery
  state: "buffered" | "handedOut" | "settled"
}

interface SubscriptionBuffer {
  readonly offer: (entry: Entry) => void
  readonly fail: (error: SubscribeError) => void
  readonly take: Effect.Effect<Delivery.Delivery, Option.Option<SubscribeError>>
}

/** What the broker pushed and the stream has not pulled yet; entries of a closed channel are skipped (requeued already). */
const makeBuffer = (): SubscriptionBuffer => {
  const entries: Array<Entry> = []
  let failure: SubscribeError | undefined
  let waiter: Deferred.Deferred<void> | undefined
  const wake = () => {
    if (waiter !== undefined) {
      const current = waiter
      waiter = undefined
      Deferred.unsafeDone(current, Exit.void)
    }
  }
  const take: Effect.Effect<Delivery.Delivery, Option.Option<SubscribeError>> = Effect.suspend(() => {
    while (entries.length > 0) {
      const entry = entries.shift()!
      if (!entry.session.open || entry.state !== "buffered") continue
      entry.state = "handedOut"
      return Effect.succeed(entry.delivery)
    }
    if (failure !== undefined) return Effect.fail(Option.some(failure))
    waiter ??= Deferred.unsafeMake(FiberId.none)
    return Effect.zipRight(Deferred.await(waiter), take)
  })
  return {
    offer: (entry) => {
      entries.push(entry)
      wake()
    },
    fail: (error) => {
      failure = error
      wake()
    },
    take
  }
}

export const make = (options: Options = {}) =>
  Effect.gen(function*() {
    const url = options.url ?? defaultUrl
    const shownUrl = redactUrl(url)
    const connectTimeout = Duration.decode(options.connectTimeout ?? "5 seconds")
    const heartbeat = Duration.decode(options.heartbeat ?? "10 seconds")
    const heartbeatSeconds = Math.max(1, Math.round(Duration.toSeconds(heartbeat)))
    const prefetch = options.prefetch ?? 100
    const declareDefaultGroup = options.declareDefaultGroup ?? true
    const scope = yield* Effect.scope

    const features: Features = {
      orderedPerKey: false,
      delayedNack: true,
      visibilityTimeout: Duration.decode(options.visibilityTimeout ?? "30 seconds"),
      deadLetterTopic: true,
      consumerGroups: true,
      persistent: true
    }

    // amqplib takes the heartbeat from the URL only; a heartbeat already in the URL wins.
    const connectUrl = withHeartbeat(url, heartbeatSeconds)
    const connectOnce = Effect.async<amqp.ChannelModel, AmqpConnectionError>((resume) => {
      let abandoned = false
      // Nagle's algorithm would hold back small frames such as acks; the socket timeout bounds the TCP handshake.
      amqp.connect(connectUrl, { noDelay: true, timeout: Duration.toMillis(connectTimeout) }).then(
        (model) => {
          // An attempt that timed out may still succeed later: close it rather than leak it.
          if (abandoned) model.close().catch(() => undefined)
          else resume(Effect.succeed(model))
        },
        (cause) => resume(Effect.fail(new AmqpConnectionError({ url: shownUrl, cause })))
      )
      return Effect.sync(() => {
        abandoned = true
      })
    }).pipe(
      Effect.timeoutFail({
        duration: connectTimeout,
        onTimeout: () =>
          new AmqpConnectionError({ url: shownUrl, cause: `no answer within ${Duration.format(connectTimeout)}` })
      })
    )

    // Connection state: `ready` resolves with the live connection and is replaced by a pending one when it is lost.
    const state = {
      model: undefined as amqp.ChannelModel | undefined,
      ready: Deferred.unsafeMake<amqp.ChannelModel>(FiberId.none),
      closing: false
    }
    const install = (model: amqp.ChannelModel) => {
      const lost = Deferred.unsafeMake<void>(FiberId.none)
      // Without an error listener a dropped socket would crash the process; `close` follows and is what we act on.
      model.on("error", () => undefined)
      model.once("close", () => {
        if (state.model === model) {
          state.model = undefined
          state.ready = Deferred.unsafeMake(FiberId.none)
        }
        Deferred.unsafeDone(lost, Exit.void)
      })
      state.model = model
      Deferred.unsafeDone(state.ready, Exit.succeed(model))
      return lost
    }

    const first = yield* connectOnce
    let lost = install(first)
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        state.closing = true
        return state.model === undefined ? Effect.void : closeQuietly(state.model)
      })
    )
    const reconnectSchedule = Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("2 seconds")))
    yield* Effect.forkIn(
      Effect.forever(Effect.gen(function*() {
        yield* Deferred.await(lost)
        if (state.closing) return yield* Effect.never
        yield* Effect.logWarning(`RabbitMQ connection to ${shownUrl} lost; reconnecting`)
        const next = yield* connectOnce.pipe(
          Effect.tapError((error) => Effect.logWarning(error.message)),
          Effect.retry(reconnectSchedule)
        )
        lost = install(next)
        yield* Effect.logInfo(`RabbitMQ connection to ${shownUrl} re-established`)
      })),
      scope
    )

    const awaitConnection = Effect.suspend(() => Deferred.await(state.ready))
    const awaitConnectionBounded = Effect.suspend(() =>
      // Every publish passes here: a live connection needs no timer racing it.
      state.model !== undefined
        ? Effect.succeed(state.model)
        : awaitConnection.pipe(
          Effect.timeoutFail({
            duration: connectTimeout,
            onTimeout: () => new AmqpConnectionError({ url: shownUrl, cause: "not reconnected within the connect timeout" })
          })
        )
    )

    // Names this process declared, so tests and tools can delete what they created (AMQP cannot list queues).
    const declaredExchanges = new Set<string>()
    const declaredQueues = new Set<string>()

    const declareTopology = (channel: amqp.Channel, topic: string, group: string) =>
      Effect.tryPromise({
        try: async () => {
          const exchange = exchangeName(topic)
          const queue = queueName(topic, group)
          await channel.assertExchange(exchange, "fanout", { durable: true })
          declaredExchanges.add(exchange)
          await channel.assertQueue(queue, {
            durable: true,
            // Messages the broker itself dead-letters (policies, foreign rejects) still reach the topic's DLQ.
            ...(isDeadLetterTopic(topic) ? {} : { deadLetterExchange: exchangeName(Delivery.deadLetterTopic(topic)) })
          })
          declaredQueues.add(queue)
          await channel.bindQueue(queue, exchange, "")
        },
        catch: (cause) => cause
      })

    // The shared confirm channel for publishing (and for republishing on nack / dead-letter).
    let confirm: { readonly model: amqp.ChannelModel; readonly channel: Promise<amqp.ConfirmChannel> } | undefined
    // Topics whose topology the confirm channel has declared; forgotten with the channel, since a failed publish
    // (say, to an exchange someone deleted) closes the channel and the next one must declare again.
    const knownTopics = new Set<string>()

    const confirmChannel = Effect.gen(function*() {
      const model = yield* awaitConnectionBounded
      if (confirm === undefined || confirm.model !== model) {
        const current: { model: amqp.ChannelModel; channel: Promise<amqp.ConfirmChannel> } = {
          model,
          channel: model.createConfirmChannel().then((channel) => {
            channel.on("error", () => undefined)
            channel.once("close", () => {
              if (confirm === current) {
                confirm = undefined
                knownTopics.clear()
              }
            })
            return channel
          })
        }
        current.channel.catch(() => {
          if (confirm === current) confirm = undefined
        })
        confirm = current
        knownTopics.clear()
      }
      const pending = confirm.channel
      return yield* Effect.tryPromise({ try: () => pending, catch: (cause) => cause })
    })

    const ensureTopic = (channel: amqp.ConfirmChannel, topic: string): Effect.Effect<void, unknown> =>
      Effect.suspend(() => {
        if (knownTopics.has(topic)) return Effect.void
        const declare = declareDefaultGroup
          ? declareTopology(channel, topic, "default")
          : Effect.tryPromise({
            try: () => channel.assertExchange(exchangeName(topic), "fanout", { durable: true }),
            catch: (cause) => cause
          }).pipe(Effect.tap(() => declaredExchanges.add(exchangeName(topic))))
        return declare.pipe(
          Effect.zipRight(isDeadLetterTopic(topic) ? Effect.void : ensureTopic(channel, Delivery.deadLetterTopic(topic))),
          Effect.tap(() => knownTopics.add(topic))
        )
      })

    const publishPrepared = (topic: string, prepared: ReadonlyArray<Prepared>) =>
      Effect.gen(function*() {
        const channel = yield* confirmChannel
        yield* ensureTopic(channel, topic)
        yield* publishConfirmed(channel, exchangeName(topic), "", prepared)
      })

    const publish = (topic: string, messages: ReadonlyArray<OutgoingMessage>): Effect.Effect<void, PublishError> =>
      messages.length === 0
        ? Effect.void
        : Effect.suspend(() => publishPrepared(topic, messages.map(prepare))).pipe(
          Effect.mapError((cause) => new PublishError({ topic, cause }))
        )

    /** Sends a copy straight to one queue (through the default exchange) and waits for its confirm. */
    const sendToQueue = (queue: string, prepared: Prepared) =>
      Effect.flatMap(confirmChannel, (channel) => publishConfirmed(channel, "", queue, [prepared]))

    const ensureDelayQueue = (topic: string, group: string, millis: number) =>
      Effect.flatMap(confirmChannel, (channel) =>
        Effect.tryPromise({
          // Declared on every use: that also resets its `x-expires` clock, so an idle delay queue disappears
          // a minute after its last message flowed back, while one in use never does.
          try: () =>
            channel.assertQueue(delayQueueName(topic, group, millis), {
              durable: true,
              messageTtl: millis,
              expires: millis + 60_000,
              deadLetterExchange: "",
              deadLetterRoutingKey: queueName(topic, group)
            }),
          catch: (cause) => cause
        })).pipe(Effect.tap(() => declaredQueues.add(delayQueueName(topic, group, millis))))

    const channelClosed = (operation: "ack" | "nack" | "deadLetter", messageId: string) =>
      Effect.fail(
        new Delivery.DeliveryError({
          operation,
          messageId,
          cause: "the channel that delivered it is closed; the broker delivers the message again"
        })
      )

    // A second settle of one delivery tag would make the broker close the channel, taking every other
    // in-flight delivery with it; the first settle wins, as with the memory transport.
    const settleOnce = (
      entry: Entry,
      operation: "ack" | "nack" | "deadLetter",
      messageId: string,
      body: () => Effect.Effect<void, unknown>
    ): Effect.Effect<void, Delivery.DeliveryError> =>
      Effect.suspend(() => {
        if (entry.state === "settled") return Effect.void
        entry.state = "settled"
        if (!entry.session.open) return channelClosed(operation, messageId)
        return body().pipe(
          Effect.mapError((cause) => new Delivery.DeliveryError({ operation, messageId, cause })),
          Effect.ensuring(Effect.sync(() => release(entry)))
        )
      })

    /** Acks the original once its copy is confirmed; the copy is what the broker delivers from now on. */
    const ackOriginal = (entry: Entry, channel: amqp.Channel) =>
      Effect.try({
        try: () => {
          entry.session.acks.forget(entry.raw)
          channel.ack(entry.raw)
        },
        catch: (cause) => cause
      })

    // If the copy could not be published, give the original back to the broker right away rather than
    // leave it held until the channel closes; the failure is still reported.
    const requeueAfter = (entry: Entry, channel: amqp.Channel) => (cause: unknown) =>
      Effect.try({
        try: () => {
          entry.session.acks.forget(entry.raw)
          channel.nack(entry.raw, false, true)
        },
        catch: () => cause
      }).pipe(Effect.zipRight(Effect.fail(cause)))

    const copyHeaders = (rawHeaders: Record<string, unknown> | undefined, extra: Record<string, unknown>) => {
      const headers: Record<string, unknown> = {}
      for (const name in rawHeaders) if (!brokerHeaders.has(name)) headers[name] = rawHeaders[name]
      return Object.assign(headers, extra)
    }

    const nackEntry = (
      entry: Entry,
      channel: amqp.Channel,
      message: Delivery.Message,
      attempt: number,
      group: string,
      nackOptions: { readonly delay?: Duration.DurationInput } | undefined
    ) =>
      settleOnce(entry, "nack", message.id, () => {
        const raw = entry.raw
        const delay = nackOptions?.delay === undefined ? 0 : Duration.toMillis(Duration.decode(nackOptions.delay))
        const bucket = delayBucket(delay)
        // The copy carries the count of deliveries so far; the original is acked only once the copy is confirmed.
        const copy: Prepared = {
          content: raw.content,
          options: republishOptions(
            raw,
            copyHeaders(raw.properties.headers as Record<string, unknown> | undefined, {
              [InternalHeaders.deliveries]: attempt
            })
          )
        }
        const send = bucket === 0
          ? sendToQueue(queueName(message.topic, group), copy)
          : Effect.zipRight(
            ensureDelayQueue(message.topic, group, bucket),
            sendToQueue(delayQueueName(message.topic, group, bucket), copy)
          )
        return send.pipe(Effect.catchAll(requeueAfter(entry, channel)), Effect.zipRight(ackOriginal(entry, channel)))
      })

    const deadLetterEntry = (
      entry: Entry,
      channel: amqp.Channel,
      message: Delivery.Message,
      reason: Delivery.DeadLetterReason
    ) =>
      settleOnce(entry, "deadLetter", message.id, () => {
        const copy: Prepared = {
          content: entry.raw.content,
          options: republishOptions(entry.raw, {
            ...Delivery.deadLetterHeaders(message, reason),
            [InternalHeaders.key]: message.key
          })
        }
        return publishPrepared(Delivery.deadLetterTopic(message.topic), [copy]).pipe(
          Effect.catchAll(requeueAfter(entry, channel)),
          Effect.zipRight(ackOriginal(entry, channel))
        )
      })

    // The per-delivery closures come from these factories rather than being written inline in an object literal:
    // transpilers that keep function names (esbuild's keepNames, as tsx runs it) would otherwise name each one with
    // an Object.defineProperty call, for every message.
    const nackOf = (entry: Entry, channel: amqp.Channel, message: Delivery.Message, attempt: number, group: string) =>
    (nackOptions?: { readonly delay?: Duration.DurationInput }) =>
      nackEntry(entry, channel, message, attempt, group, nackOptions)
    const deadLetterOf = (entry: Entry, channel: amqp.Channel, message: Delivery.Message) =>
    (reason: Delivery.DeadLetterReason) => deadLetterEntry(entry, channel, message, reason)

    // Built for every message a channel receives, so it allocates only the message and three small closures;
    // the settle paths live above, shared.
    const toDelivery = (entry: Entry, channel: amqp.Channel, topic: string, group: string): Delivery.Delivery => {
      const raw = entry.raw
      const rawHeaders = raw.properties.headers as Record<string, unknown> | undefined
      const message: Delivery.Message = {
        id: raw.properties.messageId === undefined ? "" : String(raw.properties.messageId),
        topic,
        key: headerValue(rawHeaders?.[InternalHeaders.key]) ?? "",
        payload: new Uint8Array(raw.content.buffer, raw.content.byteOffset, raw.content.byteLength),
        headers: userHeaders(rawHeaders)
      }
      const attempt = attemptOf(raw)
      return {
        message,
        attempt,
        // The hot path: queued for the burst's shared ack, with no fiber-level `ensuring` per message.
        ack: Effect.suspend(() => {
          if (entry.state === "settled") return Effect.void
          entry.state = "settled"
          if (!entry.session.open) return channelClosed("ack", message.id)
          entry.session.acks.ack(raw)
          release(entry)
          return Effect.void
        }),
        nack: nackOf(entry, channel, message, attempt, group),
        deadLetter: deadLetterOf(entry, channel, message)
      }
    }

    const release = (entry: Entry) => {
      const session = entry.session
      entry.state = "settled"
      session.unsettled.delete(entry)
      if (session.draining && session.unsettled.size === 0) Deferred.unsafeDone(session.drained, Exit.void)
    }

    /**
     * Ends a channel's consuming without stranding anything: stop new deliveries, give back the ones never handed
     * to the consumer, let the consumer settle what it holds for up to the visibility timeout, then close the
     * channel (the broker requeues whatever is still unsettled). Runs in the transport's scope, so a stream can
     * end while its last deliveries are still being acked.
     */
    const retire = (channel: amqp.Channel, session: SessionState) =>
      Effect.suspend(() => {
        if (!session.open || session.draining) return Effect.void
        session.draining = true
        const drain = Effect.gen(function*() {
          const tag = session.consumerTag
          if (tag !== undefined) {
            yield* Effect.tryPromise(() => channel.cancel(tag)).pipe(Effect.timeout("5 seconds"), Effect.ignore)
          }
          for (const entry of session.unsettled) {
            if (entry.state !== "buffered") continue
            release(entry)
            session.acks.forget(entry.raw)
            try {
              channel.nack(entry.raw, false, true)
            } catch {
              // The channel is gone, which requeues the message just the same.
            }
          }
          if (session.unsettled.size > 0) {
            yield* Deferred.await(session.drained).pipe(Effect.timeout(features.visibilityTimeout), Effect.ignore)
          }
        }).pipe(
          Effect.ensuring(Effect.suspend(() => {
            // Acks still waiting to be sent go out before the close; later ones fail like any
            // settle on a closed channel.
            session.acks.flush()
            session.open = false
            return closeQuietly(channel)
          }))
        )
        // Forked from a finalizer, the drain would inherit its uninterruptibility and its timeouts would never fire.
        return Effect.asVoid(Effect.forkIn(Effect.interruptible(drain), scope))
      })

    type SessionEnd = "closed" | { readonly fatal: unknown }

    /** One channel's life: declare, consume into the subscription's buffer, and end when the channel closes. */
    const session = (topic: string, group: string, buffer: SubscriptionBuffer): Effect.Effect<SessionEnd, unknown, Scope.Scope> =>
      Effect.gen(function*() {
        const model = yield* awaitConnection
        const runtime = yield* Effect.runtime<never>()
        const state: SessionState = {
          open: true,
          draining: false,
          consumerTag: undefined,
          unsettled: new Set(),
          drained: Deferred.unsafeMake(FiberId.none),
          acks: new AckBatch(
            () => state.open,
            (cause) =>
              Runtime.runFork(runtime)(
                Effect.logWarning("acks could not be sent; the broker delivers those messages again", cause)
              )
          )
        }
        const channel = yield* Effect.acquireRelease(
          Effect.tryPromise({ try: () => model.createChannel(), catch: (cause) => cause }),
          (channel) => retire(channel, state)
        )
        state.acks.channel = channel
        const ended = yield* Deferred.make<SessionEnd>()
        channel.on("error", () => undefined)
        channel.once("close", () => {
          state.open = false
          Deferred.unsafeDone(ended, Exit.succeed("closed"))
        })
        if (!state.open) return "closed" as const
        const queue = queueName(topic, group)
        const setup = yield* Effect.either(
          declareTopology(channel, topic, group).pipe(
            Effect.zipRight(Effect.tryPromise({ try: () => channel.prefetch(prefetch), catch: (cause) => cause })),
            Effect.zipRight(Effect.tryPromise({
              try: () =>
                channel.consume(queue, (raw) => {
                  if (raw === null) {
                    // The broker cancelled the consumer: the queue was deleted or its node went away.
                    Deferred.unsafeDone(ended, Exit.succeed({ fatal: `the broker cancelled the consumer of ${queue}` }))
                    return
                  }
                  const entry: Entry = { raw, session: state, state: "buffered", delivery: undefined as never }
                  ;(entry as { delivery: Delivery.Delivery }).delivery = toDelivery(entry, channel, topic, group)
                  state.unsettled.add(entry)
                  state.acks.received(raw)
                  buffer.offer(entry)
                }, { noAck: false }),
              catch: (cause) => cause
            })),
            Effect.tap((reply) => {
              state.consumerTag = reply.consumerTag
            })
          )
        )
        if (setup._tag === "Left") {
          if (isPermanent(setup.left)) return { fatal: setup.left }
          return yield* Effect.fail(setup.left)
        }
        return yield* Deferred.await(ended)
      })

    const consumeLoop = (topic: string, group: string, buffer: SubscriptionBuffer) =>
      Effect.gen(function*() {
        let failures = 0
        while (true) {
          const exit = yield* Effect.exit(Effect.scoped(session(topic, group, buffer)))
          if (Exit.isSuccess(exit)) {
            if (exit.value !== "closed") {
              buffer.fail(new SubscribeError({ topic, cause: exit.value.fatal }))
              return
            }
            failures = 0
            // The channel closed under us (connection loss, or a channel error): open a new one; the broker has
            // put that channel's unsettled deliveries back.
            yield* Effect.sleep("50 millis")
            continue
          }
          const cause = Cause.squash(exit.cause)
          yield* Effect.logDebug(`subscription to ${topic} (${group}) could not start: ${describe(cause)}; retrying`)
          yield* Effect.sleep(Duration.millis(Math.min(2_000, 100 * 2 ** failures++)))
        }
      })

    const subscribe = (topic: string, subscribeOptions?: SubscribeOptions): Stream.Stream<Delivery.Delivery, SubscribeError> =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const group = subscribeOptions?.group ?? "default"
        const buffer = makeBuffer()
        yield* Effect.forkScoped(consumeLoop(topic, group, buffer))
        // One delivery per pull, so a delivery counts as handed to the consumer only once it really is.
        return Stream.repeatEffectOption(buffer.take)
      }))

    // Bounded like connecting: a connection that died silently (until heartbeats notice) must not hang these.
    const withChannel = <A>(operation: string, use: (channel: amqp.Channel) => Promise<A>) =>
      Effect.acquireUseRelease(
        Effect.flatMap(awaitConnectionBounded, (model) => promise("open channel", () => model.createChannel())).pipe(
          // Acquisition is uninterruptible; without this the timeout could not cut a hanging open short.
          Effect.interruptible,
          Effect.timeoutFail({
            duration: connectTimeout,
            onTimeout: () => new AmqpOperationError({ operation: "open channel", cause: "no answer from the broker" })
          })
        ),
        (channel) => {
          channel.on("error", () => undefined)
          return promise(operation, () => use(channel)).pipe(
            Effect.timeoutFail({
              duration: connectTimeout,
              onTimeout: () => new AmqpOperationError({ operation, cause: "no answer from the broker" })
            })
          )
        },
        closeQuietly
      )

    // The connection may be in the middle of being replaced; a few retries ride that out.
    const deleteRetry = Schedule.spaced("200 millis").pipe(Schedule.intersect(Schedule.recurs(5)))

    /** Deletes the queues and exchanges this process declared whose names pass `predicate`. */
    const deleteDeclared = (predicate: (name: string) => boolean) =>
      Effect.gen(function*() {
        const queues = [...declaredQueues].filter(predicate)
        const exchanges = [...declaredExchanges].filter(predicate)
        // One channel per name: a broker error on one (say, it is already gone) closes only that channel.
        yield* Effect.forEach(queues, (queue) =>
          withChannel(`delete queue ${queue}`, (channel) => channel.deleteQueue(queue)).pipe(
            Effect.retry(deleteRetry),
            Effect.tap(() => declaredQueues.delete(queue))
          ), { concurrency: 8, discard: true })
        yield* Effect.forEach(exchanges, (exchange) =>
          withChannel(`delete exchange ${exchange}`, (channel) => channel.deleteExchange(exchange)).pipe(
            Effect.retry(deleteRetry),
            Effect.tap(() => declaredExchanges.delete(exchange))
          ), { concurrency: 8, discard: true })
        knownTopics.clear()
      })

    return {
      features,
      publish,
      subscribe,
      /** The live connection, waiting (up to the connect timeout) while a lost one is re-established. */
      connection: awaitConnectionBounded,
      /** Runs `use` on a fresh channel of the live connection, closing it afterwards. */
      withChannel,
      declared: Effect.sync(() => ({ exchanges: [...declaredExchanges], queues: [...declaredQueues] })),
      deleteDeclared
    }
  })
