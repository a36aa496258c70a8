/**
 * Consuming from JetStream: per subscription the group's durable consumer (declared through the topology), a
 * `Puller` feeding a stream of deliveries, each settled through the driver base (`Driver.delivery`: the first
 * settle wins, a failed one may be tried again), and messages delivered past `maxDeliver` dead-lettered here.
 */
import { Delivery, Failure } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { Chunk, Effect, Schedule, Stream } from "effect"
import type { NatsConnection } from "nats"
import * as Names from "./names.js"
import {
  ackPayload,
  idHeader,
  InvalidMessageError,
  keyHeader,
  msgIdHeader,
  nakImmediately,
  nakPayload,
  type Resolved,
  termPayload
} from "./protocol.js"
import { type Pulled, Puller } from "./pull.js"
import type { Topology } from "./topology.js"

/** What the sessions of one transport share. */
export interface SessionContext {
  readonly connection: NatsConnection
  readonly resolved: Resolved
  readonly topology: Topology
  readonly publish: Transport.Publisher["Type"]["publish"]
  readonly names: (topic: string) => Names.TopicNames | string
  /** The live pullers with the consumer each pulls from, asked to renew their requests after a reconnect. */
  readonly pullers: Map<Puller, ConsumerRef>
}

/** A durable consumer of a stream. */
export interface ConsumerRef {
  readonly stream: string
  readonly durable: string
}

/** A pulled message as a `Delivery` whose settles answer its ack subject; `onSettled` hears of the one that went out. */
export const toDelivery = (
  context: SessionContext,
  topic: string,
  target: Names.TopicNames,
  pulled: Pulled,
  onSettled: () => void
): Delivery.Delivery => {
  const { connection, resolved } = context
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
  const respond = (payload: Uint8Array) =>
    Effect.try({ try: () => msg.respond(payload), catch: (cause) => cause }).pipe(Effect.zipRight(Effect.sync(onSettled)))
  return Driver.delivery(message, pulled.deliveryCount, {
    ack: resolved.confirmAcks
      ? Effect.tryPromise({
        try: () => connection.request(msg.reply!, ackPayload, { timeout: resolved.requestTimeout }),
        catch: (cause) => cause
      }).pipe(Effect.zipRight(Effect.sync(onSettled)))
      : respond(ackPayload),
    nack: (delay) => respond(delay > 0 ? nakPayload(delay) : nakImmediately),
    deadLetter: (copy) =>
      context.publish(Driver.deadLetterTopic(topic), [copy]).pipe(
        // TERM, not ACK: the server stops redelivering and tells its advisories the message was given up on.
        Effect.zipRight(respond(termPayload))
      )
  }, { retryFailedSettle: true })
}

/** Too many deliveries without a settlement (a message that kills its consumers): the driver dead-letters it. */
const exhaustedReason = (resolved: Resolved, attempts: number) =>
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

/** The subscription's puller for the scope, registered for reconnect renewals while it lives. */
const acquirePuller = (context: SessionContext, target: Names.TopicNames, durable: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const created = new Puller(context.connection, `$JS.API.CONSUMER.MSG.NEXT.${target.stream}.${durable}`, {
        batchSize: context.resolved.batchSize,
        expires: context.resolved.pullExpires,
        requestTimeout: context.resolved.requestTimeout,
        ackWait: context.resolved.ackWait
      })
      context.pullers.set(created, { stream: target.stream, durable })
      return created
    }),
    (puller) =>
      Effect.sync(() => {
        context.pullers.delete(puller)
        puller.stop()
      })
  )

/**
 * The next deliveries of a subscription: what the puller holds (exhausted ones dead-lettered on the way), or a
 * wait for the next arrival. A failure the puller gave up on (the consumer was deleted) ends the subscription.
 */
const take = (
  context: SessionContext,
  topic: string,
  target: Names.TopicNames,
  puller: Puller
): Effect.Effect<Chunk.Chunk<Delivery.Delivery>, Transport.SubscribeError> =>
  Effect.gen(function*() {
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
          const delivery = toDelivery(context, topic, target, pulled, () => puller.settled(pulled))
          if (pulled.deliveryCount > context.resolved.maxDeliver) {
            yield* delivery.deadLetter(exhaustedReason(context.resolved, pulled.deliveryCount)).pipe(
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

/** `Subscriber.subscribe`: the group's durable consumer, pulled while the stream is consumed. */
export const subscribe = (context: SessionContext, topic: string, options?: Transport.SubscribeOptions) =>
  Stream.unwrapScoped(Effect.gen(function*() {
    const target = context.names(topic)
    if (typeof target === "string") {
      return yield* new Transport.SubscribeError({ topic, cause: new InvalidMessageError({ reason: target }) })
    }
    const group = Names.durableName(options?.group ?? "default")
    if (typeof group === "string") {
      return yield* new Transport.SubscribeError({ topic, cause: new InvalidMessageError({ reason: group }) })
    }
    yield* Effect.tryPromise({
      try: () => context.topology.ensureConsumer(target, group.durable),
      catch: (cause) => new Transport.SubscribeError({ topic, cause })
    })
    const puller = yield* acquirePuller(context, target, group.durable)
    return Stream.repeatEffectChunk(take(context, topic, target, puller))
  }))

/** The connection was lost: every subscription counts the settles made until the reconnect as dropped. */
export const disconnected = (context: SessionContext) => {
  for (const puller of context.pullers.keys()) puller.disconnected()
}

/**
 * After a reconnect: every subscription asks again; those whose requests may have been answered into the lost
 * connection hold, and are let go at once when their consumer's server-side count of unsettled deliveries is
 * no more than this process's subscriptions on it account for ({@link checkHolds}).
 */
export const reconnected = (context: SessionContext): Effect.Effect<void> =>
  Effect.suspend(() => {
    const holds = new Map<string, { consumer: ConsumerRef; pullers: Array<readonly [Puller, number]> }>()
    for (const [puller, consumer] of context.pullers) {
      const generation = puller.renew()
      if (generation === undefined) continue
      const key = `${consumer.stream}.${consumer.durable}`
      const entry = holds.get(key) ?? { consumer, pullers: [] }
      entry.pullers.push([puller, generation])
      holds.set(key, entry)
    }
    return Effect.forEach(holds.values(), ({ consumer, pullers }) => checkHolds(context, consumer, pullers), {
      concurrency: "unbounded",
      discard: true
    })
  })

/**
 * Asks the server how many deliveries of `consumer` it counts unsettled. When this process's subscriptions on
 * it account for all of them, nothing was lost and the holds end; otherwise (lost deliveries, or other
 * processes sharing the consumer) they run their course. A failed request (JetStream still starting after a
 * restart) is repeated with a backoff while the holds last.
 */
const checkHolds = (
  context: SessionContext,
  consumer: ConsumerRef,
  holds: ReadonlyArray<readonly [Puller, number]>
): Effect.Effect<void> => {
  const holding = () => holds.some(([puller, generation]) => puller.holding(generation))
  let warned = false
  return Effect.tryPromise({
    try: () => context.topology.ackPending(consumer.stream, consumer.durable),
    catch: (cause) => cause
  }).pipe(
    Effect.tapError((cause) =>
      warned || !holding() ? Effect.void : Effect.zipRight(
        Effect.sync(() => warned = true),
        Effect.logWarning("reading the NATS consumer's unsettled count after a reconnect failed; retrying", cause)
      )
    ),
    Effect.retry({
      schedule: Schedule.exponential("250 millis").pipe(Schedule.either(Schedule.spaced("5 seconds"))),
      while: holding
    }),
    Effect.flatMap((ackPending) =>
      Effect.suspend(() => {
        let ours = 0
        for (const [puller, ref] of context.pullers) {
          if (ref.stream === consumer.stream && ref.durable === consumer.durable) ours += puller.unsettled()
        }
        if (ackPending <= ours) {
          for (const [puller, generation] of holds) puller.resume(generation)
          return Effect.void
        }
        return Effect.logInfo(
          "deliveries may have been lost with the NATS connection (or other processes share the consumer); " +
            "the subscription asks for more once they are due again"
        ).pipe(Effect.annotateLogs({ serverUnsettled: ackPending, heldHere: ours }))
      })
    ),
    // The retries end only when the holds have ended anyway (their ack wait passed, or the subscriptions ended).
    Effect.catchAll(() => Effect.void),
    Effect.annotateLogs({ stream: consumer.stream, consumer: consumer.durable })
  )
}
