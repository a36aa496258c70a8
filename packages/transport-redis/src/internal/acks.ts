/**
 * Acks issued together share one XACK per stream and group. The queue belongs to the transport, so an ack issued
 * after its subscription ended is still sent, and the transport sends whatever is queued before it closes.
 */
import { Delivery } from "@bulwark/core"
import { Effect, Runtime, type Scope } from "effect"
import type { Redis } from "ioredis"
import { within } from "./protocol.js"

/** The transport's ack queue. */
export interface Acks {
  readonly ackTarget: (key: string, group: string) => AckTarget
  readonly queueAck: (target: AckTarget, entryId: string, messageId: string, resume: Resume | undefined) => void
  readonly sendQueuedAcks: Effect.Effect<void>
}

/** Completes an ack that waits for Redis (`confirmAcks`). */
export type Resume = (exit: Effect.Effect<void, Delivery.DeliveryError>) => void

/** A stream and group, with the queue's key for them (built once per subscription, not per ack). */
export interface AckTarget {
  readonly id: string
  readonly key: string
  readonly group: string
}

/** The ack queue over the command connection; what is queued is sent before the scope closes. */
export const make = (redis: Redis, timeoutMillis: number): Effect.Effect<Acks, never, Scope.Scope> =>
  Effect.gen(function*() {
    // Acks issued together (a handler pool settling a batch, or one fiber acking a chunk) share one XACK per
    // stream and group: one round trip instead of one per message. With `confirmAcks` an ack completes when
    // Redis has confirmed it; otherwise it completes once queued, as a JetStream or AMQP ack does, and a lost
    // XACK means a redelivery after the visibility timeout (at least once), logged when it happens. The queue
    // belongs to the transport, so an ack issued after its subscription ended is still sent, and the transport
    // sends and awaits whatever is queued before it closes its connection.
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
      const sent: Promise<unknown> = within(redis.xack(batch.key, batch.group, ...batch.ids.slice(start, end)), timeoutMillis).then(
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
    return { ackTarget, queueAck, sendQueuedAcks: Effect.asVoid(sendQueuedAcks) }
  })
