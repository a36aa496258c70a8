/**
 * The RabbitMQ (AMQP 0-9-1) transport: `Transport.Publisher` and `Transport.Subscriber` over `amqplib`.
 *
 * - publish waits for publisher confirms; messages are persistent, queues and exchanges durable;
 * - per topic a durable fanout exchange; per (topic, group) a durable queue bound to it. The `default` group's
 *   queue is declared when publishing too, so nothing published before its first subscriber is lost;
 * - manual ack; the prefetch count bounds a subscription's unsettled deliveries;
 * - `nack({ delay })` republishes to a TTL queue that dead-letters back into the group's queue;
 * - `deadLetter` publishes to the `${topic}.dlq` topic with the reason headers, then acks;
 * - a lost connection is re-established in the background and subscriptions resume on it.
 *
 * Built on the shared driver base (`@bulwark/transport/Driver`); the protocol lives in `src/internal`: the connection,
 * the topology, publishing and the consuming sessions, each its own module.
 */
import * as DriverBase from "@bulwark/transport/Driver"
import type { Driver, Publisher, Subscriber } from "@bulwark/transport/Transport"
import type * as amqp from "amqplib"
import { Config, type ConfigError, Context, Duration, Effect, Layer, Scope } from "effect"
import * as internal from "./internal/amqp.js"

/** The server could not be reached (or refused the login) within the connect timeout. */
export const AmqpConnectionError = internal.AmqpConnectionError
/** The server could not be reached (or refused the login) within the connect timeout. */
export type AmqpConnectionError = internal.AmqpConnectionError

/** A broker operation outside publish/subscribe (opening a channel, deleting topology) failed. */
export const AmqpOperationError = internal.AmqpOperationError
/** A broker operation outside publish/subscribe (opening a channel, deleting topology) failed. */
export type AmqpOperationError = internal.AmqpOperationError

/** The URL used when none is configured: the local RabbitMQ with its default account. */
export const defaultUrl: string = internal.defaultUrl

/** Header names the driver reserves for itself; they never appear in a delivered message's headers. */
export const InternalHeaders = internal.InternalHeaders

/** The exchange a topic publishes to. */
export const exchangeName: (topic: string) => string = internal.exchangeName
/** The durable queue a (topic, group) consumes from. */
export const queueName: (topic: string, group: string) => string = internal.queueName

/** Settings of the RabbitMQ transport. */
export interface Options {
  /** `amqp://user:pass@host:port/vhost`. Default {@link defaultUrl}. */
  readonly url?: string
  /** Bound on connecting at start, on each reconnect attempt, and on publishing while reconnecting. Default 5 s. */
  readonly connectTimeout?: Duration.DurationInput
  /**
   * How long a publish waits for the broker's confirms before it fails with a transient `PublishError` (the
   * messages may still arrive, so it can be repeated): a broker that hangs while its connection stays up (still
   * sending heartbeats) would otherwise hold every publish. Also bounds the copies a nack or dead-letter sends.
   * Default 30 s.
   */
  readonly publishTimeout?: Duration.DurationInput
  /** AMQP heartbeat; a peer silent for about two of these is considered dead. Default 10 s. */
  readonly heartbeat?: Duration.DurationInput
  /** Unsettled deliveries per subscription: the concurrency limit a consumer sees. Default 100. */
  readonly prefetch?: number
  /**
   * How long deliveries a finished subscription still holds may be settled before its channel closes and the
   * broker requeues them; declared as `features.visibilityTimeout`. Default 30 s. A crashed process (socket closed)
   * is noticed at once; one that vanished silently after about two heartbeats, so keep `heartbeat` at most half this.
   */
  readonly visibilityTimeout?: Duration.DurationInput
  /** Declare the `default` group's queue when publishing, so early messages wait for it. Default true. */
  readonly declareDefaultGroup?: boolean
}

/** A running RabbitMQ transport: the ports plus access to the connection and the declared topology. */
export interface AmqpTransport extends Driver {
  /** The live connection, waiting up to the connect timeout while a lost one is re-established. */
  readonly connection: Effect.Effect<amqp.ChannelModel, AmqpConnectionError>
  /** Runs `use` on a fresh channel of the live connection and closes the channel afterwards. */
  readonly withChannel: <A>(
    operation: string,
    use: (channel: amqp.Channel) => Promise<A>
  ) => Effect.Effect<A, AmqpConnectionError | AmqpOperationError>
  /** The exchanges and queues this process declared (AMQP itself cannot list them). */
  readonly declared: Effect.Effect<{ readonly exchanges: ReadonlyArray<string>; readonly queues: ReadonlyArray<string> }>
  /** Deletes the declared queues and exchanges whose names pass `predicate` (test clean-up, tooling). */
  readonly deleteDeclared: (
    predicate: (name: string) => boolean
  ) => Effect.Effect<void, AmqpConnectionError | AmqpOperationError>
}

/** The running transport, for what the generic ports do not cover (clean-up, inspecting the broker). */
export class AmqpClient extends Context.Tag("@bulwark/transport-amqp/AmqpClient")<AmqpClient, AmqpTransport>() {}

/** Connects (failing with `AmqpConnectionError` within the connect timeout) and closes the connection with the scope. */
export const make = (options: Options = {}): Effect.Effect<AmqpTransport, AmqpConnectionError, Scope.Scope> =>
  internal.make(options)

/** Provides `Publisher`, `Subscriber` and `AmqpClient` from one connection. */
export const layer = (
  options: Options = {}
): Layer.Layer<Publisher | Subscriber | AmqpClient, AmqpConnectionError> =>
  DriverBase.layer(make(options), { system: "rabbitmq", service: AmqpClient })

/** The connection URL from `BULWARK_AMQP_URL`, defaulting to {@link defaultUrl}. */
export const url: Config.Config<string> = Config.withDefault(Config.string("BULWARK_AMQP_URL"), internal.defaultUrl)

/** {@link layer} with the URL read from `BULWARK_AMQP_URL` (default {@link defaultUrl}). */
export const layerConfig = (
  options: Omit<Options, "url"> = {}
): Layer.Layer<Publisher | Subscriber | AmqpClient, AmqpConnectionError | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(url, (configured) => layer({ ...options, url: configured })))
