/**
 * Consuming from RabbitMQ: per subscription a loop of sessions, each one channel's life (declare, consume into the
 * subscription's buffer, end when the channel closes); deliveries settle through the driver base (`Driver.delivery`:
 * the first settle wins), acks batched per channel, nacks and dead-letters by a confirmed copy.
 */
import { Delivery } from "@bulwark/core"
import * as Driver from "@bulwark/transport/Driver"
import type { Features, SubscribeOptions } from "@bulwark/transport/Transport"
import { SubscribeError } from "@bulwark/transport/Transport"
import type amqp from "amqplib"
import { Cause, Deferred, Duration, Effect, Exit, FiberId, Option, Runtime, type Scope, Stream } from "effect"
import type { AmqpConnectionError } from "./protocol.js"
import {
  attemptOf,
  brokerHeaders,
  closeQuietly,
  delayBucket,
  delayQueueName,
  describe,
  headerValue,
  InternalHeaders,
  isPermanent,
  type Prepared,
  queueName,
  republishOptions,
  userHeaders
} from "./protocol.js"
import type { Publisher } from "./publisher.js"
import type { Topology } from "./topology.js"

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

/** What a subscription needs from the rest of the driver. */
export interface SessionContext {
  readonly connection: Driver.SupervisedConnection<amqp.ChannelModel, AmqpConnectionError>
  readonly topology: Topology
  readonly publisher: Publisher
  readonly features: Features
  readonly prefetch: number
  /** The transport's scope: a retiring channel drains in it after its subscription's stream ended. */
  readonly scope: Scope.Scope
}

const channelClosed = (operation: "ack" | "nack" | "deadLetter", messageId: string) =>
  Effect.fail(
    new Delivery.DeliveryError({
      operation,
      messageId,
      cause: "the channel that delivered it is closed; the broker delivers the message again"
    })
  )

const release = (entry: Entry) => {
  const session = entry.session
  entry.state = "settled"
  session.unsettled.delete(entry)
  if (session.draining && session.unsettled.size === 0) Deferred.unsafeDone(session.drained, Exit.void)
}

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

/**
 * A settle of a delivery the consumer holds: the entry is settled from now on (the driver base has made sure this
 * is the first settle); on a closed channel it fails, as the broker has put the message back already.
 */
const settling = (entry: Entry, operation: "nack" | "deadLetter", messageId: string, body: () => Effect.Effect<void, unknown>) =>
  Effect.suspend(() => {
    entry.state = "settled"
    if (!entry.session.open) return channelClosed(operation, messageId)
    return Effect.ensuring(body(), Effect.sync(() => release(entry)))
  })

const nackEntry = (
  context: SessionContext,
  entry: Entry,
  channel: amqp.Channel,
  message: Delivery.Message,
  attempt: number,
  group: string,
  delay: number
) =>
  settling(entry, "nack", message.id, () => {
    const raw = entry.raw
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
      ? context.publisher.sendToQueue(queueName(message.topic, group), copy)
      : Effect.zipRight(
        Effect.flatMap(context.publisher.confirmChannel, (confirm) =>
          context.topology.ensureDelayQueue(confirm, message.topic, group, bucket)),
        context.publisher.sendToQueue(delayQueueName(message.topic, group, bucket), copy)
      )
    return send.pipe(Effect.catchAll(requeueAfter(entry, channel)), Effect.zipRight(ackOriginal(entry, channel)))
  })

const deadLetterEntry = (
  context: SessionContext,
  entry: Entry,
  channel: amqp.Channel,
  message: Delivery.Message,
  deadCopy: { readonly headers: Readonly<Record<string, string>> }
) =>
  settling(entry, "deadLetter", message.id, () => {
    const copy: Prepared = {
      content: entry.raw.content,
      options: republishOptions(entry.raw, { ...deadCopy.headers, [InternalHeaders.key]: message.key })
    }
    return context.publisher.publishPrepared(Driver.deadLetterTopic(message.topic), [copy]).pipe(
      Effect.catchAll(requeueAfter(entry, channel)),
      Effect.zipRight(ackOriginal(entry, channel))
    )
  })

// Built for every message a channel receives; the settle paths are the shared functions above.
const toDelivery = (context: SessionContext, entry: Entry, channel: amqp.Channel, topic: string, group: string): Delivery.Delivery => {
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
  return Driver.delivery(message, attempt, {
    // The hot path: queued for the burst's shared ack, with no fiber-level `ensuring` per message.
    ack: Effect.suspend(() => {
      entry.state = "settled"
      if (!entry.session.open) return channelClosed("ack", message.id)
      entry.session.acks.ack(raw)
      release(entry)
      return Effect.void
    }),
    nack: (delay) => nackEntry(context, entry, channel, message, attempt, group, delay),
    deadLetter: (copy) => deadLetterEntry(context, entry, channel, message, copy)
  })
}

/** Sends a consumer's cancel frame at once; the reply is awaited by the drain (a failure means the channel is gone). */
const cancelNow = (channel: amqp.Channel, tag: string | undefined): Promise<unknown> | undefined => {
  if (tag === undefined) return undefined
  try {
    const reply: Promise<unknown> = channel.cancel(tag)
    reply.catch(() => undefined)
    return reply
  } catch {
    return undefined
  }
}

/**
 * Ends a channel's consuming without stranding anything: stop new deliveries, give back the ones never handed
 * to the consumer, let the consumer settle what it holds for up to the visibility timeout, then close the
 * channel (the broker requeues whatever is still unsettled). Runs in the transport's scope, so a stream can
 * end while its last deliveries are still being acked.
 */
const retire = (context: SessionContext, channel: amqp.Channel, session: SessionState) =>
  Effect.suspend(() => {
    if (!session.open || session.draining) return Effect.void
    session.draining = true
    // The cancel frame leaves now, not when the forked drain first runs: a stream that ended must stop taking
    // deliveries at once, or a message published meanwhile (a nack's own copy) sits in this channel's prefetch
    // until it is given back, flagged redelivered.
    const cancelled = cancelNow(channel, session.consumerTag)
    const drain = Effect.gen(function*() {
      if (cancelled !== undefined) {
        yield* Effect.tryPromise(() => cancelled).pipe(Effect.timeout("5 seconds"), Effect.ignore)
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
        yield* Deferred.await(session.drained).pipe(Effect.timeout(context.features.visibilityTimeout), Effect.ignore)
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
    return Effect.asVoid(Effect.forkIn(Effect.interruptible(drain), context.scope))
  })

type SessionEnd = "closed" | { readonly fatal: unknown }

/** One channel's life: declare, consume into the subscription's buffer, and end when the channel closes. */
const session = (
  context: SessionContext,
  topic: string,
  group: string,
  buffer: SubscriptionBuffer
): Effect.Effect<SessionEnd, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const model = yield* context.connection.await
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
      (channel) => retire(context, channel, state)
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
      context.topology.declare(channel, topic, group).pipe(
        Effect.zipRight(Effect.tryPromise({ try: () => channel.prefetch(context.prefetch), catch: (cause) => cause })),
        Effect.zipRight(Effect.tryPromise({
          try: () =>
            channel.consume(queue, (raw) => {
              if (raw === null) {
                // The broker cancelled the consumer: the queue was deleted or its node went away.
                Deferred.unsafeDone(ended, Exit.succeed({ fatal: `the broker cancelled the consumer of ${queue}` }))
                return
              }
              if (state.draining) {
                // Sent before the broker saw the cancel: give it straight back rather than hold it, never handed
                // out, until the drain's visibility timeout closes the channel.
                try {
                  channel.nack(raw, false, true)
                } catch {
                  // The channel is gone, which requeues the message just the same.
                }
                return
              }
              const entry: Entry = { raw, session: state, state: "buffered", delivery: undefined as never }
              ;(entry as { delivery: Delivery.Delivery }).delivery = toDelivery(context, entry, channel, topic, group)
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

const consumeLoop = (context: SessionContext, topic: string, group: string, buffer: SubscriptionBuffer) =>
  Effect.gen(function*() {
    let failures = 0
    while (true) {
      const exit = yield* Effect.exit(Effect.scoped(session(context, topic, group, buffer)))
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

/** `Subscriber.subscribe`. */
export const subscribe = (
  context: SessionContext,
  topic: string,
  subscribeOptions?: SubscribeOptions
): Stream.Stream<Delivery.Delivery, SubscribeError> =>
  Stream.unwrapScoped(Effect.gen(function*() {
    const group = subscribeOptions?.group ?? "default"
    const buffer = makeBuffer()
    yield* Effect.forkScoped(consumeLoop(context, topic, group, buffer))
    // One delivery per pull, so a delivery counts as handed to the consumer only once it really is.
    return Stream.repeatEffectOption(buffer.take)
  }))
