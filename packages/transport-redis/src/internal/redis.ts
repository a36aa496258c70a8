import { Delivery } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { Chunk, Clock, Data, Duration, Effect, Runtime, Schedule, Scope, Stream } from "effect"
import { Redis, ReplyError, type RedisOptions } from "ioredis"
import { randomUUID } from "node:crypto"
import { hostname } from "node:os"
import * as Scripts from "./scripts.js"

/** Settings with every default applied. */
export interface Settings {
  readonly url: string
  readonly keyPrefix: string
  readonly visibilityTimeout: Duration.Duration
  readonly connectTimeout: Duration.Duration
  readonly reconnectTimeout: Duration.Duration
  readonly maxLength: number | undefined
  readonly readCount: number
  readonly delayPollInterval: Duration.Duration
  readonly maxRetriesPerRequest: number
  readonly connectionName: string
  readonly persistent: boolean | undefined
  readonly redisOptions: RedisOptions
  readonly confirmAcks: boolean
}

/** The server could not be reached (or the URL is unusable) when a connection was opened. */
export class RedisConnectionError extends Data.TaggedError("RedisConnectionError")<{
  /** The URL with any password masked. */
  readonly url: string
  readonly cause: unknown
}> {
  override get message(): string {
    const cause = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `cannot connect to Redis at ${this.url}: ${cause}`
  }
}

/** Entry field names; everything a message carries travels in them. */
export const Fields = {
  id: "id",
  key: "key",
  headers: "headers",
  payload: "payload",
  /** Deliveries before this copy was written (a nacked copy restarts Redis' delivery count). */
  attempts: "attempts",
  /** A nacked copy is for this group only; other groups acknowledge and skip it. */
  group: "group"
} as const

export const streamKey = (keyPrefix: string, topic: string) => `${keyPrefix}${topic}`
export const delayedKey = (keyPrefix: string, topic: string, group: string) => `${keyPrefix}${topic}:delayed:${group}`

/** The URL as it may appear in errors and logs. */
export const redactUrl = Driver.redactUrl

/** A command failed; `cause` is ioredis' error (a `ReplyError` from the server, or a connection failure). */
class CommandError extends Data.TaggedError("CommandError")<{ readonly cause: unknown }> {}

const command = <A>(run: () => Promise<A>) => Effect.tryPromise({ try: run, catch: (cause) => new CommandError({ cause }) })

// Redis keeps real time (delays are scored by its clock), so the driver's timers do too, whatever Clock the
// caller's fiber carries (a TestClock would otherwise stall the subscription loop).
const liveClock = Clock.make()
const inRealTime = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.withClock(effect, liveClock)

const isReplyError = (error: unknown): boolean => error instanceof ReplyError
const isNoGroup = (error: unknown): boolean => isReplyError(error) && String((error as Error).message).startsWith("NOGROUP")

/** Opens a connection in the current scope; it is closed when the scope closes. Bounded by `connectTimeout`. */
export const connect = (settings: Settings, name: string): Effect.Effect<Redis, RedisConnectionError, Scope.Scope> =>
  inRealTime(Effect.gen(function*() {
    const url = redactUrl(settings.url)
    const parsed = yield* Effect.try({
      try: () => new URL(settings.url),
      catch: (cause) => new RedisConnectionError({ url, cause })
    })
    if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
      return yield* new RedisConnectionError({ url, cause: `unsupported scheme ${parsed.protocol} (use redis: or rediss:)` })
    }
    const redis = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const client = new Redis(settings.url, {
          connectTimeout: Duration.toMillis(settings.connectTimeout),
          maxRetriesPerRequest: settings.maxRetriesPerRequest,
          // ioredis would retry forever at start; here only an established connection reconnects.
          retryStrategy: (times) => Math.min(50 * 2 ** times, 2_000),
          ...settings.redisOptions,
          lazyConnect: true,
          connectionName: name
        })
        // Failures surface through the commands that hit them; the event would otherwise crash the process.
        client.on("error", () => {})
        return client
      }),
      (client) => Effect.sync(() => client.disconnect(false))
    )
    yield* Effect.tryPromise({
      try: () => redis.connect(),
      catch: (cause) => new RedisConnectionError({ url, cause })
    }).pipe(
      Effect.timeoutFail({
        duration: settings.connectTimeout,
        onTimeout: () =>
          new RedisConnectionError({ url, cause: `no answer within ${Duration.format(settings.connectTimeout)}` })
      }),
      Effect.tapError(() => Effect.sync(() => redis.disconnect(false)))
    )
    return redis
  }))

const runScript = (redis: Redis, script: Scripts.Script, args: ReadonlyArray<string | Buffer | number>, binary = false) => {
  const send = (command: "EVALSHA" | "EVAL", head: string) =>
    binary
      ? redis.callBuffer(command, [head, script.keys, ...args])
      : redis.call(command, [head, script.keys, ...args])
  return send("EVALSHA", script.sha).catch((error: unknown) => {
    if (isReplyError(error) && String((error as Error).message).startsWith("NOSCRIPT")) {
      return send("EVAL", script.lua)
    }
    throw error
  })
}

const text = (value: unknown): string => Buffer.isBuffer(value) ? value.toString("utf8") : String(value)

/** An entry as read: the fields the transport writes, decoded; any others are ignored. */
interface Entry {
  readonly entryId: string
  readonly id: string | undefined
  readonly key: string | undefined
  readonly headers: Buffer | undefined
  readonly payload: Buffer | undefined
  /** Deliveries before this copy was written; 0 for an original. */
  readonly attempts: number
  /** The group a nacked copy is addressed to. */
  readonly group: string | undefined
}

// Field names compared as bytes, so reading an entry decodes only the values it uses.
const fieldName = {
  id: Buffer.from(Fields.id),
  key: Buffer.from(Fields.key),
  headers: Buffer.from(Fields.headers),
  payload: Buffer.from(Fields.payload),
  attempts: Buffer.from(Fields.attempts),
  group: Buffer.from(Fields.group)
}

const asBuffer = (value: unknown): Buffer => Buffer.isBuffer(value) ? value : Buffer.from(String(value))

const parseEntry = (raw: unknown): Entry | undefined => {
  if (!Array.isArray(raw) || raw.length < 2 || !Array.isArray(raw[1])) return undefined
  const values = raw[1] as Array<unknown>
  let id: string | undefined
  let key: string | undefined
  let headers: Buffer | undefined
  let payload: Buffer | undefined
  let attempts = 0
  let group: string | undefined
  for (let i = 0; i + 1 < values.length; i += 2) {
    const name = asBuffer(values[i])
    const value = asBuffer(values[i + 1])
    if (name.equals(fieldName.payload)) payload = value
    else if (name.equals(fieldName.id)) id = value.toString("utf8")
    else if (name.equals(fieldName.key)) key = value.toString("utf8")
    else if (name.equals(fieldName.headers)) headers = value
    else if (name.equals(fieldName.attempts)) attempts = Number(value.toString("utf8")) || 0
    else if (name.equals(fieldName.group)) group = value.toString("utf8")
  }
  return { entryId: text(raw[0]), id, key, headers, payload, attempts, group }
}

const parseHeaders = (raw: Buffer | undefined): Record<string, string> => {
  if (raw === undefined) return {}
  const source = raw.toString("utf8")
  try {
    const parsed: unknown = JSON.parse(source)
    if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) {
      const headers: Record<string, string> = {}
      for (const [name, value] of Object.entries(parsed)) headers[name] = String(value)
      return headers
    }
  } catch {
    // Falls through: the raw text is kept so nothing is lost.
  }
  return { "bulwark-redis-invalid-headers": source }
}

const messageFields = (message: Delivery.Message, headers: Readonly<Record<string, string>>) => {
  const fields: Array<string | Buffer> = [Fields.id, message.id]
  if (message.key !== "") fields.push(Fields.key, message.key)
  if (Object.keys(headers).length > 0) fields.push(Fields.headers, JSON.stringify(headers))
  fields.push(Fields.payload, Buffer.from(message.payload.buffer, message.payload.byteOffset, message.payload.byteLength))
  return fields
}

/** Creates the driver: one command connection for the process, one blocking connection per subscription. */
export const make = (settings: Settings) =>
  Effect.gen(function*() {
    const connectionName = settings.connectionName
    const redis = yield* connect(settings, `${connectionName}:commands`)
    const visibilityMillis = Duration.toMillis(settings.visibilityTimeout)
    // Idle subscriptions wake this often to look for deliveries of dead consumers.
    const claimIntervalMillis = Math.min(5_000, Math.max(50, Math.floor(visibilityMillis / 4)))
    const maxLength = settings.maxLength === undefined ? "0" : String(settings.maxLength)

    // Unknown (INFO denied by an ACL) counts as not persistent: declaring durability we cannot see would lie.
    const persistent = settings.persistent ?? (yield* command(() => redis.info("persistence")).pipe(
      Effect.map((info) => /^aof_enabled:1\s*$/m.test(info)),
      Effect.catchAll((error) =>
        Effect.as(Effect.logWarning("could not read INFO persistence; declaring persistent: false", error.cause), false)
      )
    ))

    const features: Transport.Features = {
      orderedPerKey: false,
      delayedNack: true,
      visibilityTimeout: settings.visibilityTimeout,
      deadLetterTopic: true,
      consumerGroups: true,
      persistent
    }

    // Acks issued together (a handler pool settling a batch, or one fiber acking a chunk) share one XACK per
    // stream and group: one round trip instead of one per message. With `confirmAcks` an ack completes when
    // Redis has confirmed it; otherwise it completes once queued, as a JetStream or AMQP ack does, and a lost
    // XACK means a redelivery after the visibility timeout (at least once), logged when it happens. The queue
    // belongs to the transport, so an ack issued after its subscription ended is still sent, and the transport
    // sends and awaits whatever is queued before it closes its connection.
    type Resume = (exit: Effect.Effect<void, Delivery.DeliveryError>) => void
    /** A stream and group, with the queue's key for them (built once per subscription, not per ack). */
    interface AckTarget {
      readonly id: string
      readonly key: string
      readonly group: string
    }
    const ackTarget = (key: string, group: string): AckTarget => ({ id: `${group}\u0000${key}`, key, group })
    interface AckBatch {
      readonly key: string
      readonly group: string
      readonly ids: Array<string>
      readonly messageIds: Array<string>
      readonly resumes: Array<Resume | undefined>
    }
    const runtime = yield* Effect.runtime<never>()
    let queuedAcks = new Map<string, AckBatch>()
    const unansweredAcks = new Set<Promise<unknown>>()
    const sendAcks = (batch: AckBatch, start: number, end: number) => {
      const sent: Promise<unknown> = redis.xack(batch.key, batch.group, ...batch.ids.slice(start, end)).then(
        () => {
          for (let i = start; i < end; i++) batch.resumes[i]?.(Effect.void)
        },
        (error: unknown) => {
          const cause = error ?? new Error("XACK failed")
          let unconfirmed = 0
          for (let i = start; i < end; i++) {
            const resume = batch.resumes[i]
            if (resume === undefined) unconfirmed++
            else resume(Effect.fail(new Delivery.DeliveryError({ operation: "ack", messageId: batch.messageIds[i]!, cause })))
          }
          if (unconfirmed > 0) {
            Runtime.runFork(runtime)(Effect.logWarning(
              `${unconfirmed} acknowledgement(s) on ${batch.key} failed; those messages will be delivered again`,
              cause
            ))
          }
        }
      ).finally(() => unansweredAcks.delete(sent))
      unansweredAcks.add(sent)
    }
    const flushAcks = () => {
      const batches = queuedAcks
      if (batches.size === 0) return
      queuedAcks = new Map()
      for (const batch of batches.values()) {
        for (let start = 0; start < batch.ids.length; start += 1_000) {
          sendAcks(batch, start, Math.min(batch.ids.length, start + 1_000))
        }
      }
    }
    const queueAck = (target: AckTarget, entryId: string, messageId: string, resume: Resume | undefined) => {
      if (queuedAcks.size === 0) setImmediate(flushAcks)
      let batch = queuedAcks.get(target.id)
      if (batch === undefined) {
        batch = { key: target.key, group: target.group, ids: [], messageIds: [], resumes: [] }
        queuedAcks.set(target.id, batch)
      }
      batch.ids.push(entryId)
      batch.messageIds.push(messageId)
      batch.resumes.push(resume)
    }
    const sendQueuedAcks = Effect.promise(() => {
      flushAcks()
      return Promise.allSettled([...unansweredAcks])
    })
    // Registered after the command connection, so it runs before that connection closes.
    yield* Effect.addFinalizer(() => sendQueuedAcks)

    const xaddArgs = (key: string, fields: ReadonlyArray<string | Buffer>): Array<string | Buffer> =>
      settings.maxLength === undefined ? [key, "*", ...fields] : [key, "MAXLEN", "~", maxLength, "*", ...fields]

    const publish = (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) => {
      if (messages.length === 0) return Effect.void
      const key = streamKey(settings.keyPrefix, topic)
      const args = messages.map((m) => xaddArgs(key, messageFields({ ...m, topic }, m.headers)))
      return Effect.tryPromise({
        try: async () => {
          if (args.length === 1) {
            await redis.call("XADD", args[0]!)
            return
          }
          // MULTI: the batch is published whole or not at all.
          const transaction = redis.multi()
          for (const a of args) transaction.call("XADD", a)
          const results = await transaction.exec()
          if (results === null) throw new Error("transaction aborted")
          for (const [error] of results) if (error) throw error
        },
        catch: (cause) => new Transport.PublishError({ topic, cause })
      })
    }

    const subscribe = (topic: string, options?: Transport.SubscribeOptions) =>
      Stream.unwrapScoped(
        Effect.gen(function*() {
          const group = options?.group ?? "default"
          const key = streamKey(settings.keyPrefix, topic)
          const delayed = delayedKey(settings.keyPrefix, topic, group)
          const consumer = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`
          const fail = (cause: unknown) => new Transport.SubscribeError({ topic, cause })

          // Id 0: a new group starts at the beginning of the retained stream, so nothing published before
          // the first subscriber is missed.
          const createGroup = command(() =>
            redis.call("XGROUP", ["CREATE", key, group, "0", "MKSTREAM"]).catch((error: unknown) => {
              if (isReplyError(error) && String((error as Error).message).startsWith("BUSYGROUP")) return "OK"
              throw error
            })
          )
          yield* Effect.mapError(createGroup, (error) => fail(error.cause))

          // Registered before the blocking connection so that it runs after that connection is closed: a read
          // still blocked on the server would otherwise recreate the consumer.
          yield* Effect.addFinalizer(() =>
            command(() => runScript(redis, Scripts.releaseConsumer, [key, group, consumer])).pipe(
              Effect.catchAll((cause) => Effect.logDebug("could not remove the consumer from its group", cause))
            )
          )
          const blocking = yield* Effect.mapError(connect(settings, `${connectionName}:sub:${consumer}`), fail)
          // Runs first when the subscription ends: its acks reach Redis before the consumer is released.
          yield* Effect.addFinalizer(() => sendQueuedAcks)

          const acks = ackTarget(key, group)
          const ack = settings.confirmAcks
            ? (entryId: string, messageId: string) =>
              Effect.async<void, Delivery.DeliveryError>((resume) => queueAck(acks, entryId, messageId, resume))
            : (entryId: string, messageId: string) => Effect.sync(() => queueAck(acks, entryId, messageId, undefined))

          const settleError = (operation: "nack" | "deadLetter", messageId: string) => (cause: unknown) =>
            new Delivery.DeliveryError({ operation, messageId, cause })

          const nack = (
            entryId: string,
            deliveries: number,
            message: Delivery.Message,
            attempt: number,
            delayMillis: number
          ) =>
            Effect.tryPromise({
              try: () => {
                const delay = Math.ceil(delayMillis)
                return runScript(redis, Scripts.nack, [
                  key,
                  delayed,
                  group,
                  consumer,
                  entryId,
                  deliveries,
                  delay,
                  maxLength,
                  ...messageFields(message, message.headers),
                  Fields.attempts,
                  String(attempt),
                  Fields.group,
                  group
                ])
              },
              catch: settleError("nack", message.id)
            }).pipe(Effect.asVoid)

          const deadLetter = (entryId: string, deliveries: number, message: Delivery.Message, copy: Transport.OutgoingMessage) =>
            Effect.tryPromise({
              try: () =>
                runScript(redis, Scripts.deadLetter, [
                  key,
                  streamKey(settings.keyPrefix, Delivery.deadLetterTopic(topic)),
                  group,
                  consumer,
                  entryId,
                  deliveries,
                  maxLength,
                  ...messageFields(message, copy.headers)
                ]),
              catch: settleError("deadLetter", message.id)
            }).pipe(Effect.asVoid)

          // Built for every entry read: the message and the settle paths above, guarded by the driver base (the
          // first settle wins, so a second nack cannot add a second copy).
          const toDelivery = (entry: Entry, deliveries: number): Delivery.Delivery => {
            const entryId = entry.entryId
            const message: Delivery.Message = {
              id: entry.id ?? entryId,
              topic,
              key: entry.key ?? "",
              payload: entry.payload ?? new Uint8Array(0),
              headers: parseHeaders(entry.headers)
            }
            const attempt = entry.attempts + deliveries
            return Driver.delivery(message, attempt, {
              ack: ack(entryId, message.id),
              nack: (delay) => nack(entryId, deliveries, message, attempt, delay),
              deadLetter: (copy) => deadLetter(entryId, deliveries, message, copy)
            })
          }

          // Nacked copies addressed to other groups are acknowledged here and never delivered.
          const keep = (entries: ReadonlyArray<Entry>) =>
            Effect.gen(function*() {
              const foreign: Array<string> = []
              const mine: Array<Entry> = []
              for (const entry of entries) {
                const target = entry.group
                if (target !== undefined && target !== group) foreign.push(entry.entryId)
                else mine.push(entry)
              }
              if (foreign.length > 0) yield* command(() => redis.xack(key, group, ...foreign))
              return mine
            })

          let nextClaimAt = 0
          let cursor = "0-0"
          let claimSteps = 0

          const claim = Effect.gen(function*() {
            const reply = (yield* command(() =>
              runScript(redis, Scripts.claim, [key, group, consumer, visibilityMillis, cursor, settings.readCount], true)
            )) as [Buffer, Array<unknown>, Array<number>, number]
            cursor = text(reply[0])
            if (reply[3] > 0) {
              yield* Effect.logWarning(
                `${reply[3]} pending entries of ${key} were trimmed before they were acknowledged (see maxLength)`
              )
            }
            const entries: Array<Entry> = []
            const counts = new Map<string, number>()
            reply[1].forEach((raw, i) => {
              const entry = parseEntry(raw)
              if (entry !== undefined) {
                entries.push(entry)
                counts.set(entry.entryId, Number(reply[2][i] ?? 1))
              }
            })
            const mine = yield* keep(entries)
            return mine.map((entry) => toDelivery(entry, counts.get(entry.entryId) ?? 1))
          })

          const read = (blockMillis: number) =>
            Effect.gen(function*() {
              const reply = yield* command(() =>
                blocking.callBuffer("XREADGROUP", [
                  "GROUP",
                  group,
                  consumer,
                  "COUNT",
                  settings.readCount,
                  "BLOCK",
                  blockMillis,
                  "STREAMS",
                  key,
                  ">"
                ])
              )
              if (!Array.isArray(reply) || reply.length === 0) return []
              const raw = (reply[0] as [Buffer, Array<unknown>])[1] ?? []
              const entries = raw.flatMap((r) => {
                const entry = parseEntry(r)
                return entry === undefined ? [] : [entry]
              })
              const mine = yield* keep(entries)
              return mine.map((entry) => toDelivery(entry, 1))
            })

          const poll = Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            if (now >= nextClaimAt) {
              const claimed = yield* claim
              // A long pending list is scanned in steps (XAUTOCLAIM looks at 10 × COUNT entries per call):
              // a few steps right away, the rest after the next interval, so a busy consumer does not spend
              // its round trips rescanning deliveries that are merely in flight.
              claimSteps = cursor === "0-0" ? 0 : claimSteps + 1
              nextClaimAt = claimSteps > 0 && claimSteps < 10 && claimed.length > 0 ? now : now + claimIntervalMillis
              if (claimed.length > 0) return Chunk.unsafeFromArray(claimed)
            }
            const block = Math.max(1, Math.min(claimIntervalMillis, nextClaimAt - now))
            return Chunk.unsafeFromArray(yield* read(block))
          }).pipe(
            Effect.catchAll((error) =>
              // The stream or group was deleted under us: recreate it and go on.
              isNoGroup(error.cause) ? Effect.as(createGroup, Chunk.empty<Delivery.Delivery>()) : Effect.fail(error)
            ),
            Effect.retry({
              while: (error) => !isReplyError(error.cause),
              schedule: Schedule.exponential("100 millis").pipe(
                Schedule.union(Schedule.spaced("2 seconds")),
                Schedule.upTo(settings.reconnectTimeout)
              )
            }),
            Effect.mapError((error) => fail(error.cause)),
            inRealTime
          )

          const mover = command(() => runScript(redis, Scripts.move, [delayed, key, 100, maxLength])).pipe(
            Effect.map((reply) => {
              const [moved, wait] = reply as [number, number]
              const interval = Duration.toMillis(settings.delayPollInterval)
              return moved >= 100 ? 0 : wait < 0 ? interval : Math.min(interval, wait)
            }),
            Effect.catchAll((error) =>
              Effect.as(Effect.logWarning("moving due delayed messages failed; will retry", error), 1_000)
            ),
            Effect.flatMap((sleep) => Effect.sleep(Duration.millis(sleep))),
            Effect.forever,
            inRealTime
          )
          yield* Effect.forkScoped(mover)

          return Stream.repeatEffectChunk(poll)
        })
      )

    return { features, publish, subscribe }
  })
