/**
 * The Amazon SQS transport: `Transport.Publisher` and `Transport.Subscriber` over SQS (or an emulator speaking
 * its current protocol), through `@aws-sdk/client-sqs`.
 *
 * - A topic is one queue (`${queuePrefix}${topic}`, characters SQS does not allow written `_xx`, `.fifo` on
 *   FIFO queues), created on first use. SQS has no fan-out: every subscriber of a topic competes for its
 *   messages (`consumerGroups: false`); a subscription naming a group other than `default` fails with
 *   `GroupsUnsupported` rather than silently share (fan out with SNS in front of one topic per group).
 * - FIFO (the default): the key is the message group, so a key's next message is not delivered while one is in
 *   flight (`orderedPerKey`); the message id is the deduplication id, so a publish repeated within 5 minutes is
 *   stored once (`dedupeWindow`). `fifo: false` uses standard queues: no order, no dedupe, higher throughput.
 * - A message is the payload as the body (as its UTF-8 text when SQS accepts that text, else in base64 with the
 *   attribute `bulwark-encoding`), and the message attributes `bulwark-id`, `bulwark-key` and `bulwark-headers`
 *   (JSON: SQS allows only 10 attributes).
 * - At least once: a delivery is deleted by `ack` (batched `DeleteMessageBatch`); unsettled, it is received
 *   again after the queue's visibility timeout. `nack({ delay })` is `ChangeMessageVisibility` to the delay.
 * - `deadLetter` sends a copy with `Delivery.deadLetterHeaders` to `${topic}.dlq`, then deletes the original.
 *   Every queue also has SQS's own redrive policy to that queue after `maxReceiveCount` receives.
 */
import type { SQSClientConfig } from "@aws-sdk/client-sqs"
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { Config, ConfigError, Duration, Effect, Layer, Option, Scope } from "effect"
import * as internal from "./internal/sqs.js"

/** Settings of the SQS transport; every field has a default. */
export interface Options {
  /** The service's URL. Default: the AWS endpoint of `region` (an emulator: `http://127.0.0.1:4566`). */
  readonly endpoint?: string
  /** Default `AWS_REGION`, else `us-east-1`. */
  readonly region?: string
  /** Further client options (credentials, retries, ...); `endpoint` and `region` are the transport's. */
  readonly clientConfig?: SQSClientConfig
  /** Prepended to every queue name. Default `bulwark-`. */
  readonly queuePrefix?: string
  /** FIFO queues: per-key order and a 5-minute dedupe window. Default true. */
  readonly fifo?: boolean
  /** The queues' visibility timeout, whole seconds, 0 to 12 hours. Default 30 s. */
  readonly visibilityTimeout?: Duration.DurationInput
  /** How long one receive waits for messages (long polling), whole seconds up to 20. Default 1 s. */
  readonly waitTime?: Duration.DurationInput
  /** Receives after which SQS itself moves a message to `${topic}.dlq` (its redrive). Default 20. */
  readonly maxReceiveCount?: number
  /** Bound on the first call at start; past it the layer fails with `SqsConnectionError`. Default 10 s. */
  readonly connectTimeout?: Duration.DurationInput
  /** How long a subscription retries failing receives before it fails. Default 30 s. */
  readonly reconnectTimeout?: Duration.DurationInput
  /**
   * How long one HTTP call may go without an answer (socket inactivity) before it fails and is retried, so a
   * service that stops answering fails calls instead of hanging them (for minutes, by the AWS SDK's defaults). At least the
   * receive wait + 5 s. Default 30 s. A `requestHandler` in `clientConfig` takes precedence.
   */
  readonly socketTimeout?: Duration.DurationInput
  /** Wait for SQS to answer each ack (delete) before the ack completes. Default false: completes once queued. */
  readonly confirmAcks?: boolean
}

/** The service could not be reached, or the settings are unusable, when the transport started. */
export const SqsConnectionError = internal.SqsConnectionError
/** The service could not be reached, or the settings are unusable, when the transport started. */
export type SqsConnectionError = internal.SqsConnectionError

/** A topic whose queue name would be longer than SQS allows; the cause of the `PublishError` / `SubscribeError`. */
export const InvalidName = internal.InvalidName
/** A topic whose queue name would be longer than SQS allows; the cause of the `PublishError` / `SubscribeError`. */
export type InvalidName = internal.InvalidName

/** A subscription asked for a consumer group other than `default`, which SQS cannot provide. */
export const GroupsUnsupported = internal.GroupsUnsupported
/** A subscription asked for a consumer group other than `default`, which SQS cannot provide. */
export type GroupsUnsupported = internal.GroupsUnsupported

/** Message attribute names the transport writes, for tools that read the queues directly. */
export const Attributes = internal.Attributes

/** The queue name of a topic. */
export const queueName: (prefix: string, topic: string, fifo: boolean) => string = internal.queueName

/** The transport: the two ports' operations and the features it declares. */
export interface SqsTransport extends Transport.Driver {}

const wholeSeconds = (input: Duration.DurationInput, min: number, max: number) =>
  Math.min(max, Math.max(min, Math.ceil(Duration.toMillis(Duration.decode(input)) / 1000)))

const settings = (options: Options): internal.Settings => {
  const waitSeconds = wholeSeconds(options.waitTime ?? "1 second", 0, 20)
  return {
    endpoint: options.endpoint,
    region: options.region ?? process.env["AWS_REGION"] ?? "us-east-1",
    clientConfig: options.clientConfig ?? {},
    queuePrefix: options.queuePrefix ?? "bulwark-",
    fifo: options.fifo ?? true,
    visibilitySeconds: wholeSeconds(options.visibilityTimeout ?? "30 seconds", 0, 43_200),
    waitSeconds,
    maxReceiveCount: Math.max(1, Math.min(1000, options.maxReceiveCount ?? 20)),
    connectTimeout: Duration.decode(options.connectTimeout ?? "10 seconds"),
    reconnectTimeout: Duration.decode(options.reconnectTimeout ?? "30 seconds"),
    socketTimeout: Duration.max(
      Duration.decode(options.socketTimeout ?? "30 seconds"),
      Duration.seconds(waitSeconds + 5)
    ),
    confirmAcks: options.confirmAcks ?? false
  }
}

/** Connects and answers the transport; its client closes with the scope. Fails fast when unreachable. */
export const make = (options: Options = {}): Effect.Effect<SqsTransport, SqsConnectionError, Scope.Scope> =>
  internal.make(settings(options))

/** Provides `Transport.Publisher` and `Transport.Subscriber` backed by SQS. */
export const layer = (options: Options = {}): Layer.Layer<Transport.Publisher | Transport.Subscriber, SqsConnectionError> =>
  Driver.layer(make(options), { system: "aws_sqs" })

/** `BULWARK_SQS_ENDPOINT` (default: AWS's) and `BULWARK_SQS_QUEUE_PREFIX` (default `bulwark-`). */
export const config: Config.Config<{ readonly endpoint: Option.Option<string>; readonly queuePrefix: string }> = Config.all({
  endpoint: Config.option(Config.string("BULWARK_SQS_ENDPOINT")),
  queuePrefix: Config.string("BULWARK_SQS_QUEUE_PREFIX").pipe(Config.withDefault("bulwark-"))
})

/** {@link layer} with the endpoint and queue prefix read from {@link config}; `options` sets the rest. */
export const layerConfig = (
  options: Omit<Options, "endpoint" | "queuePrefix"> = {}
): Layer.Layer<Transport.Publisher | Transport.Subscriber, SqsConnectionError | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(config, (read) =>
    layer({
      ...options,
      queuePrefix: read.queuePrefix,
      ...(Option.isSome(read.endpoint) ? { endpoint: read.endpoint.value } : {})
    })))
