/**
 * Consuming from Redis Streams: a subscription is a consumer of its group with its own blocking connection; it
 * reads new entries, takes over those of dead consumers (`XAUTOCLAIM`), and moves due delayed nacks back.
 */
import { Delivery } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { Chunk, Clock, Duration, Effect, Schedule, Stream } from "effect"
import type { Redis } from "ioredis"
import { randomUUID } from "node:crypto"
import { hostname } from "node:os"
import * as Scripts from "./scripts.js"
import type { Acks } from "./acks.js"
import {
  command,
  connect,
  delayedKey,
  type Entry,
  Fields,
  inRealTime,
  isNoGroup,
  isReplyError,
  messageFields,
  parseEntry,
  parseHeaders,
  runScript,
  type Settings,
  streamKey,
  text
} from "./protocol.js"

/** What a subscription needs from the rest of the driver. */
export interface SessionContext {
  readonly redis: Redis
  readonly settings: Settings
  readonly acks: Acks
}

/** `Subscriber.subscribe`. */
export const subscribe = (context: SessionContext, topic: string, options?: Transport.SubscribeOptions) => {
  const { acks, redis, settings } = context
  const { ackTarget, queueAck, sendQueuedAcks } = acks
  const connectionName = settings.connectionName
  const visibilityMillis = Duration.toMillis(settings.visibilityTimeout)
  // Idle subscriptions wake this often to look for deliveries of dead consumers.
  const claimIntervalMillis = Math.min(5_000, Math.max(50, Math.floor(visibilityMillis / 4)))
  const maxLength = settings.maxLength === undefined ? "0" : String(settings.maxLength)
  return Stream.unwrapScoped(
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
      const blocking = yield* Effect.mapError(connect(settings, `${connectionName}:sub:${consumer}`, claimIntervalMillis), fail)
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
}
