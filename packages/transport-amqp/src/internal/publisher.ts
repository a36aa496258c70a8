/**
 * Publishing to RabbitMQ: one shared confirm channel per connection (for publishing and for the copies a nack or a
 * dead-letter republishes), and short-lived channels for other broker operations.
 */
import type * as Driver from "@bulwark/transport/Driver"
import type { OutgoingMessage } from "@bulwark/transport/Transport"
import { PublishError } from "@bulwark/transport/Transport"
import type amqp from "amqplib"
import { Duration, Effect } from "effect"
import type { AmqpConnectionError } from "./protocol.js"
import { AmqpOperationError, closeQuietly, exchangeName, prepare, type Prepared, promise, publishConfirmed } from "./protocol.js"
import type { Topology } from "./topology.js"

type Connection = Driver.SupervisedConnection<amqp.ChannelModel, AmqpConnectionError>

/** The publishing side of the driver. */
export interface Publisher {
  /** The shared confirm channel of the live connection (opened on first use after each reconnection). */
  readonly confirmChannel: Effect.Effect<amqp.ConfirmChannel, unknown>
  /** Publishes prepared messages to a topic's exchange and waits for every confirm. */
  readonly publishPrepared: (topic: string, prepared: ReadonlyArray<Prepared>) => Effect.Effect<void, unknown>
  /** `Publisher.publish`. */
  readonly publish: (topic: string, messages: ReadonlyArray<OutgoingMessage>) => Effect.Effect<void, PublishError>
  /** Sends a copy straight to one queue (through the default exchange) and waits for its confirm. */
  readonly sendToQueue: (queue: string, prepared: Prepared) => Effect.Effect<void, unknown>
  /** Runs `use` on a fresh channel of the live connection and closes the channel afterwards. */
  readonly withChannel: <A>(
    operation: string,
    use: (channel: amqp.Channel) => Promise<A>
  ) => Effect.Effect<A, AmqpConnectionError | AmqpOperationError>
}

/** The publisher over a supervised connection. */
export const make = (
  connection: Connection,
  topology: Topology,
  connectTimeout: Duration.Duration,
  publishTimeout: Duration.Duration
): Publisher => {
  const confirmMillis = Duration.toMillis(publishTimeout)
  let confirm: { readonly model: amqp.ChannelModel; readonly channel: Promise<amqp.ConfirmChannel> } | undefined

  const confirmChannel = Effect.gen(function*() {
    const model = yield* connection.current
    if (confirm === undefined || confirm.model !== model) {
      const current: { model: amqp.ChannelModel; channel: Promise<amqp.ConfirmChannel> } = {
        model,
        channel: model.createConfirmChannel().then((channel) => {
          channel.on("error", () => undefined)
          channel.once("close", () => {
            if (confirm === current) {
              confirm = undefined
              topology.knownTopics.clear()
            }
          })
          return channel
        })
      }
      current.channel.catch(() => {
        if (confirm === current) confirm = undefined
      })
      confirm = current
      topology.knownTopics.clear()
    }
    const pending = confirm.channel
    return yield* Effect.tryPromise({ try: () => pending, catch: (cause) => cause })
  })

  const publishPrepared = (topic: string, prepared: ReadonlyArray<Prepared>) =>
    Effect.gen(function*() {
      const channel = yield* confirmChannel
      yield* topology.ensureTopic(channel, topic)
      yield* publishConfirmed(channel, exchangeName(topic), "", prepared, confirmMillis)
    })

  const publish = (topic: string, messages: ReadonlyArray<OutgoingMessage>): Effect.Effect<void, PublishError> =>
    messages.length === 0
      ? Effect.void
      : Effect.suspend(() => publishPrepared(topic, messages.map(prepare))).pipe(
        Effect.mapError((cause) => new PublishError({ topic, cause }))
      )

  const sendToQueue = (queue: string, prepared: Prepared) =>
    Effect.flatMap(confirmChannel, (channel) => publishConfirmed(channel, "", queue, [prepared], confirmMillis))

  // Bounded like connecting: a connection that died silently (until heartbeats notice) must not hang these.
  const withChannel = <A>(operation: string, use: (channel: amqp.Channel) => Promise<A>) =>
    Effect.acquireUseRelease(
      Effect.flatMap(connection.current, (model) => promise("open channel", () => model.createChannel())).pipe(
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

  return { confirmChannel, publishPrepared, publish, sendToQueue, withChannel }
}
