/**
 * The Google Cloud Pub/Sub transport: `Transport.Publisher` and `Transport.Subscriber` over Pub/Sub or its
 * emulator, through the official client's generated `PublisherClient` and `SubscriberClient`.
 *
 * - A topic is the Pub/Sub topic of the same name; a group is the subscription `${topic}~${group}`. Both are
 *   created when first used. Publishing also creates the topic's `default` subscription (`subscribeOnPublish`),
 *   so what is published before the first subscriber is kept for it; other groups receive what is published
 *   after they first subscribed, as Pub/Sub subscriptions do.
 * - A message is Pub/Sub data (the payload) with its headers as attributes, plus `bulwark-id` and `bulwark-key`.
 *   Headers beyond Pub/Sub's attribute limits travel framed in front of the data instead, whole.
 * - At least once: a delivery is acknowledged by `ack`; unsettled, it returns after the visibility timeout
 *   (the ack deadline; below Pub/Sub's 10 s minimum it is set on each pull with `modifyAckDeadline`).
 *   `nack({ delay })` sets the deadline to the delay (whole seconds). A delivery may be settled after its
 *   subscription's stream ended.
 * - `deadLetter` publishes a copy with `Delivery.deadLetterHeaders` to `${topic}.dlq`, then acknowledges.
 *   Every subscription also carries Pub/Sub's own dead-letter policy to that topic after `maxDeliveryAttempts`
 *   (the service's redrive, for a message no consumer ever settles), which is what makes Pub/Sub count
 *   `deliveryAttempt`. On Google's service, its service agent needs publish rights on the `.dlq` topic and
 *   subscribe rights on the subscription for that forwarding.
 * - Not ordered per key (see docs/transports.md). No broker-side dedupe of publishes.
 */
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import type { ClientConfig } from "@google-cloud/pubsub"
import { Config, ConfigError, Duration, Effect, Layer, Option, Scope } from "effect"
import * as internal from "./internal/pubsub.js"

/** Settings of the Pub/Sub transport; every field has a default. */
export interface Options {
  /** The Google Cloud project. Default `bulwark` (any name works on the emulator). */
  readonly projectId?: string
  /**
   * `host:port` of the service. Default: `PUBSUB_EMULATOR_HOST` when set, else Google's endpoint. Any endpoint
   * that is not `*.googleapis.com` is taken as an emulator (plain-text gRPC, no credentials).
   */
  readonly apiEndpoint?: string
  /** Further client options (credentials, key file, ...); `projectId` and `apiEndpoint` are the transport's. */
  readonly clientConfig?: ClientConfig
  /** How long a delivery may stay unsettled before it is delivered again; whole seconds, 1 to 600. Default 30 s. */
  readonly visibilityTimeout?: Duration.DurationInput
  /** Bound on the first call at start; past it the layer fails with `PubSubConnectionError`. Default 10 s. */
  readonly connectTimeout?: Duration.DurationInput
  /** How long a subscription retries failing pulls before it fails. Default 30 s. */
  readonly reconnectTimeout?: Duration.DurationInput
  /**
   * Bound on one publish call, the client's own retries included: past it the publish fails with `PublishError`
   * (the messages may or may not be stored: publish again, consumers deduplicate by id). Default 30 s.
   */
  readonly publishTimeout?: Duration.DurationInput
  /** How long one pull waits for messages. Default 1 s. */
  readonly pullTimeout?: Duration.DurationInput
  /** Messages asked for per pull. Default 100. */
  readonly maxMessages?: number
  /** Deliveries after which Pub/Sub itself forwards a message to `${topic}.dlq` (5 to 100). Default 20. */
  readonly maxDeliveryAttempts?: number
  /** Create the topic's `default` subscription when publishing, so nothing is published to no one. Default true. */
  readonly subscribeOnPublish?: boolean
  /** Overrides `features.persistent` (default: false on an emulator, true on Google's service). */
  readonly persistent?: boolean
  /**
   * Wait for Pub/Sub to answer each ack before the ack completes. Default false: an ack completes once queued
   * (acks queued together go out as one `acknowledge`), and a lost one means a redelivery, logged.
   */
  readonly confirmAcks?: boolean
}

/** The service could not be reached, or the settings are unusable, when the transport started. */
export const PubSubConnectionError = internal.PubSubConnectionError
/** The service could not be reached, or the settings are unusable, when the transport started. */
export type PubSubConnectionError = internal.PubSubConnectionError

/** A topic or group name Pub/Sub does not accept; the cause of the `PublishError` / `SubscribeError`. */
export const InvalidName = internal.InvalidName
/** A topic or group name Pub/Sub does not accept; the cause of the `PublishError` / `SubscribeError`. */
export type InvalidName = internal.InvalidName

/** Attribute names the transport writes, for tools that read the topics directly. */
export const Attributes = internal.Attributes

/** The subscription id of a topic's group. */
export const subscriptionId: (topic: string, group: string) => string = internal.subscriptionId

/** Whether Pub/Sub accepts a name as a topic or subscription id. */
export const validName: (name: string) => boolean = internal.validName

/** The transport: the two ports' operations and the features it declares. */
export interface PubSubTransport extends Transport.Driver {}

const wholeSeconds = (input: Duration.DurationInput) =>
  Math.min(600, Math.max(1, Math.ceil(Duration.toMillis(Duration.decode(input)) / 1000)))

const settings = (options: Options): internal.Settings => ({
  projectId: options.projectId ?? "bulwark",
  apiEndpoint: options.apiEndpoint ?? process.env["PUBSUB_EMULATOR_HOST"],
  clientConfig: options.clientConfig ?? {},
  visibilitySeconds: wholeSeconds(options.visibilityTimeout ?? "30 seconds"),
  connectTimeout: Duration.decode(options.connectTimeout ?? "10 seconds"),
  reconnectTimeout: Duration.decode(options.reconnectTimeout ?? "30 seconds"),
  publishTimeout: Duration.decode(options.publishTimeout ?? "30 seconds"),
  pullTimeout: Duration.decode(options.pullTimeout ?? "1 second"),
  maxMessages: Math.max(1, Math.min(1000, options.maxMessages ?? 100)),
  maxDeliveryAttempts: Math.max(5, Math.min(100, options.maxDeliveryAttempts ?? 20)),
  subscribeOnPublish: options.subscribeOnPublish ?? true,
  persistent: options.persistent,
  confirmAcks: options.confirmAcks ?? false
})

/** Connects and answers the transport; its clients close with the scope. Fails fast when unreachable. */
export const make = (options: Options = {}): Effect.Effect<PubSubTransport, PubSubConnectionError, Scope.Scope> =>
  internal.make(settings(options))

/** Provides `Transport.Publisher` and `Transport.Subscriber` backed by Pub/Sub. */
export const layer = (options: Options = {}): Layer.Layer<Transport.Publisher | Transport.Subscriber, PubSubConnectionError> =>
  Driver.layer(make(options), { system: "gcp_pubsub" })

/** `BULWARK_PUBSUB_PROJECT` (default `bulwark`) and `BULWARK_PUBSUB_ENDPOINT` (default: see {@link Options}). */
export const config: Config.Config<{ readonly projectId: string; readonly apiEndpoint: Option.Option<string> }> = Config.all({
  projectId: Config.string("BULWARK_PUBSUB_PROJECT").pipe(Config.withDefault("bulwark")),
  apiEndpoint: Config.option(Config.string("BULWARK_PUBSUB_ENDPOINT"))
})

/** {@link layer} with the project and endpoint read from {@link config}; `options` sets the rest. */
export const layerConfig = (
  options: Omit<Options, "projectId" | "apiEndpoint"> = {}
): Layer.Layer<Transport.Publisher | Transport.Subscriber, PubSubConnectionError | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(config, (read) =>
    layer({
      ...options,
      projectId: read.projectId,
      ...(Option.isSome(read.apiEndpoint) ? { apiEndpoint: read.apiEndpoint.value } : {})
    })))
