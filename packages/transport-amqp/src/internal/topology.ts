/**
 * The RabbitMQ topology: per topic a durable fanout exchange, per (topic, group) a durable queue bound to it, per
 * delay a TTL queue flowing back into the group's queue. Remembers what this process declared (AMQP cannot list
 * queues), so tests and tools can delete it.
 */
import { Delivery } from "@bulwark/core"
import type amqp from "amqplib"
import { Effect, Schedule } from "effect"
import type { AmqpConnectionError, AmqpOperationError } from "./protocol.js"
import { delayQueueName, exchangeName, isDeadLetterTopic, queueName } from "./protocol.js"

/** The declared names and the declaring operations. */
export interface Topology {
  readonly declaredExchanges: Set<string>
  readonly declaredQueues: Set<string>
  /**
   * Topics whose topology the shared confirm channel has declared; forgotten with that channel, since a failed
   * publish (say, to an exchange someone deleted) closes the channel and the next one must declare again.
   */
  readonly knownTopics: Set<string>
  /** Declares a (topic, group)'s exchange, queue and binding. */
  readonly declare: (channel: amqp.Channel, topic: string, group: string) => Effect.Effect<void, unknown>
  /** Declares what publishing to `topic` needs (and its dead-letter topic), once per confirm channel. */
  readonly ensureTopic: (channel: amqp.ConfirmChannel, topic: string) => Effect.Effect<void, unknown>
  /** Declares the TTL queue holding a group's messages nacked with `millis` of delay. */
  readonly ensureDelayQueue: (channel: amqp.Channel, topic: string, group: string, millis: number) => Effect.Effect<void, unknown>
}

/** A topology; `declareDefaultGroup` declares the `default` group's queue on publish, so early messages wait for it. */
export const make = (declareDefaultGroup: boolean): Topology => {
  const declaredExchanges = new Set<string>()
  const declaredQueues = new Set<string>()
  const knownTopics = new Set<string>()

  const declare = (channel: amqp.Channel, topic: string, group: string) =>
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

  const ensureTopic = (channel: amqp.ConfirmChannel, topic: string): Effect.Effect<void, unknown> =>
    Effect.suspend(() => {
      if (knownTopics.has(topic)) return Effect.void
      const declared = declareDefaultGroup
        ? declare(channel, topic, "default")
        : Effect.tryPromise({
          try: () => channel.assertExchange(exchangeName(topic), "fanout", { durable: true }),
          catch: (cause) => cause
        }).pipe(Effect.tap(() => declaredExchanges.add(exchangeName(topic))))
      return declared.pipe(
        Effect.zipRight(isDeadLetterTopic(topic) ? Effect.void : ensureTopic(channel, Delivery.deadLetterTopic(topic))),
        Effect.tap(() => knownTopics.add(topic))
      )
    })

  const ensureDelayQueue = (channel: amqp.Channel, topic: string, group: string, millis: number) =>
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
    }).pipe(Effect.tap(() => declaredQueues.add(delayQueueName(topic, group, millis))))

  return { declaredExchanges, declaredQueues, knownTopics, declare, ensureTopic, ensureDelayQueue }
}

// The connection may be in the middle of being replaced; a few retries ride that out.
const deleteRetry = Schedule.spaced("200 millis").pipe(Schedule.intersect(Schedule.recurs(5)))

/** Deletes the queues and exchanges this process declared whose names pass `predicate`, one channel per name. */
export const deleteDeclared = (
  topology: Topology,
  withChannel: <A>(operation: string, use: (channel: amqp.Channel) => Promise<A>) => Effect.Effect<A, AmqpConnectionError | AmqpOperationError>,
  predicate: (name: string) => boolean
): Effect.Effect<void, AmqpConnectionError | AmqpOperationError> =>
  Effect.gen(function*() {
    const queues = [...topology.declaredQueues].filter(predicate)
    const exchanges = [...topology.declaredExchanges].filter(predicate)
    // One channel per name: a broker error on one (say, it is already gone) closes only that channel.
    yield* Effect.forEach(queues, (queue) =>
      withChannel(`delete queue ${queue}`, (channel) => channel.deleteQueue(queue)).pipe(
        Effect.retry(deleteRetry),
        Effect.tap(() => topology.declaredQueues.delete(queue))
      ), { concurrency: 8, discard: true })
    yield* Effect.forEach(exchanges, (exchange) =>
      withChannel(`delete exchange ${exchange}`, (channel) => channel.deleteExchange(exchange)).pipe(
        Effect.retry(deleteRetry),
        Effect.tap(() => topology.declaredExchanges.delete(exchange))
      ), { concurrency: 8, discard: true })
    topology.knownTopics.clear()
  })
