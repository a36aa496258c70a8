/**
 * Consuming from JetStream: per subscription the group's durable consumer (declared through the topology), a
 * `Puller` feeding a stream of deliveries, each settled through the driver base (`Driver.delivery`: the first
 * settle wins, a failed one may be tried again), and messages delivered past `maxDeliver` dead-lettered here.
 */
import { Delivery, Failure } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { Chunk, Effect, Stream } from "effect"
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
  /** The live pullers, asked to renew their requests after a reconnect. */
  readonly pullers: Set<Puller>
}

/** A pulled message as a `Delivery` whose settles answer its ack subject. */
export const toDelivery = (context: SessionContext, topic: string, target: Names.TopicNames, pulled: Pulled): Delivery.Delivery => {
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
      context.pullers.add(created)
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
          const delivery = toDelivery(context, topic, target, pulled)
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
