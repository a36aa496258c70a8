/**
 * The RabbitMQ protocol pieces every part of the driver shares: errors, names, header handling, message
 * preparation and the confirmed publish.
 */
import * as Driver from "@bulwark/transport/Driver"
import type { OutgoingMessage } from "@bulwark/transport/Transport"
import type amqp from "amqplib"
import { Data, Effect } from "effect"

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
export const brokerHeaders = new Set([
  "x-death",
  "x-first-death-exchange",
  "x-first-death-queue",
  "x-first-death-reason",
  "x-last-death-exchange",
  "x-last-death-queue",
  "x-last-death-reason",
  "x-delivery-count"
])

export const describe = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

/** The URL as it may appear in errors and logs. */
export const redactUrl = Driver.redactUrl

export const withHeartbeat = (url: string, seconds: number): string => {
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

export const isDeadLetterTopic = (topic: string) => topic.endsWith(".dlq")

/** Broker replies that no retry will fix: access refused, not found, precondition (argument mismatch), not allowed. */
export const isPermanent = (cause: unknown) => {
  const code = (cause as { code?: unknown } | null)?.code
  return code === 403 || code === 404 || code === 405 || code === 406 || code === 530
}

/** One header value as a string. */
export const headerValue = Driver.headerValue

const reserved = Driver.reservedHeaders([InternalHeaders.key, InternalHeaders.deliveries, ...brokerHeaders])

/** A delivered message's headers without the driver's and the broker's own. */
export const userHeaders = (raw: Record<string, unknown> | undefined): Record<string, string> => Driver.userHeaders(raw, reserved)

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

export const toBuffer = (payload: Uint8Array): Buffer =>
  Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)

export interface Prepared {
  readonly content: Buffer
  readonly options: amqp.Options.Publish
}

export const prepare = (message: OutgoingMessage): Prepared => ({
  content: toBuffer(message.payload),
  options: {
    persistent: true,
    messageId: message.id,
    headers: { ...message.headers, [InternalHeaders.key]: message.key }
  }
})

/** The properties a republished copy keeps, with broker bookkeeping dropped and its delivery count set. */
export const republishOptions = (message: amqp.Message, headers: Record<string, unknown>): amqp.Options.Publish => {
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
export const publishConfirmed = (
  channel: amqp.ConfirmChannel,
  exchange: string,
  routingKey: string,
  messages: ReadonlyArray<Prepared>,
  timeoutMillis: number
): Effect.Effect<void, unknown> =>
  Effect.async<void, unknown>((resume) => {
    let pending = messages.length
    let finished = false
    let index = 0
    let timer: ReturnType<typeof setTimeout> | undefined
    const stop = () => {
      finished = true
      if (timer !== undefined) clearTimeout(timer)
      channel.removeListener("drain", pump)
      channel.removeListener("close", onClose)
    }
    const finish = (exit: Effect.Effect<void, unknown>) => {
      if (finished) return
      stop()
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
    // A broker that hangs with its connection up (heartbeats still flowing) never confirms nor closes the channel.
    timer = setTimeout(
      () => finish(Effect.fail(new Error(`no confirm from the broker within ${timeoutMillis} ms`))),
      timeoutMillis
    )
    pump()
    // An interrupted publish leaves no listener behind on the shared channel.
    return Effect.sync(stop)
  })

export const promise = <A>(operation: string, thunk: () => PromiseLike<A>) =>
  Effect.tryPromise({ try: thunk, catch: (cause) => new AmqpOperationError({ operation, cause }) })

/** Closes quietly: a channel or connection that is already gone is what we want. */
export const closeQuietly = (thing: { close(): Promise<void> }) =>
  Effect.promise(() => Promise.resolve().then(() => thing.close()).catch(() => undefined)).pipe(
    // Finalizers run uninterruptibly; the close itself must stay interruptible or the timeout could not cut it short.
    Effect.interruptible,
    Effect.timeout("5 seconds"),
    Effect.ignore
  )
