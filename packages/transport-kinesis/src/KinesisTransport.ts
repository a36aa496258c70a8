/**
 * The Amazon Kinesis Data Streams transport: `Transport.Publisher` and `Transport.Subscriber` over Kinesis (or
 * kinesalite, its emulator), through `@aws-sdk/client-kinesis`.
 *
 * - A topic is one stream (`${streamPrefix}${topic}`, characters Kinesis does not allow written `_xx`), created
 *   with `shardCount` shards on first use. A message is one record: its key is the partition key (a keyless
 *   message is partitioned by its id), and id, key and headers travel framed in front of the payload.
 * - A consumer group is a set of shard leases and checkpoints in the {@link CheckpointStore} (`CheckpointStore/Sql`
 *   for PostgreSQL or PGlite; `CheckpointStore.layerMemory()` for one process): each group reads every record,
 *   a new group from the trim horizon; the processes of a group share the shards (a lease per shard, taken over
 *   when its holder stops renewing it), the subscriptions within a process share its records.
 * - At least once: Kinesis has no acknowledgement, so the transport keeps one. A delivery is in flight until
 *   `ack`, handed out again after `nack({ delay })` or the visibility timeout; the checkpoint moves past a record
 *   once it and every record before it in its shard are settled. A process that dies leaves its leases to
 *   expire (`leaseDuration`) and the next holder reads again from the checkpoint, counting another attempt.
 * - Per-key order: a key's next record is not handed out while an earlier one is unsettled; closed shards (a
 *   reshard) are read to their end before their children.
 * - `deadLetter` puts a copy with `Delivery.deadLetterHeaders` on `${topic}.dlq` (a stream), then settles the
 *   original. Kinesis has no redrive of its own.
 * - No broker-side dedupe: a publish repeated after a lost answer is stored twice.
 */
import type { KinesisClientConfig } from "@aws-sdk/client-kinesis"
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { Config, type ConfigError, Duration, Effect, Layer, Option, type Scope } from "effect"
import type { CheckpointStore } from "./CheckpointStore.js"
import * as connection from "./internal/connection.js"
import * as internal from "./internal/kinesis.js"
import * as topology from "./internal/topology.js"

/** Settings of the Kinesis transport; every field has a default. */
export interface Options {
  /** The service's URL. Default: the AWS endpoint of `region` (kinesalite: `http://127.0.0.1:4567`). */
  readonly endpoint?: string
  /** Default `AWS_REGION`, else `us-east-1`. */
  readonly region?: string
  /** Further client options (credentials, retries, a request handler, …); `endpoint` and `region` are the transport's. */
  readonly clientConfig?: KinesisClientConfig
  /** Prepended to every stream name. Default `bulwark-`. */
  readonly streamPrefix?: string
  /** Shards of a stream the transport creates. Default 1. An existing stream is used as it is. */
  readonly shardCount?: number
  /** How long a delivery may stay unsettled in a live process before it is handed out again. Default 30 s. */
  readonly visibilityTimeout?: Duration.DurationInput
  /** How long a shard lease lasts unrenewed (a dead process's shards return after it). Default: the visibility timeout. */
  readonly leaseDuration?: Duration.DurationInput
  /** Once a shard is caught up, the least time from one read's start to the next's (Kinesis allows 5 reads per second per shard). Default 250 ms. */
  readonly pollInterval?: Duration.DurationInput
  /** Records per `GetRecords`. Default 1000 (the service allows 10 000). */
  readonly fetchLimit?: number
  /** Unsettled records read ahead per shard; reading pauses beyond it. Default 2000. */
  readonly maxBuffered?: number
  /** Deliveries handed to a subscription at once. Default 100. */
  readonly maxBatch?: number
  /** How long a group's reader keeps its leases after its last subscription ended. Default: the visibility timeout. */
  readonly idleRelease?: Duration.DurationInput
  /** Bound on the first call at start; past it the layer fails with `KinesisConnectionError`. Default 10 s. */
  readonly connectTimeout?: Duration.DurationInput
  /** How long reads and publishes retry failing calls (throttling, the network) before they fail. Default 30 s. */
  readonly reconnectTimeout?: Duration.DurationInput
  /**
   * How long one HTTP call may go without an answer (socket inactivity) before it fails and is retried, so a
   * service that stops answering fails calls instead of hanging them (for minutes, by the AWS SDK's defaults). Default 30 s.
   * A `requestHandler` in `clientConfig` takes precedence.
   */
  readonly socketTimeout?: Duration.DurationInput
  /** Wait for the checkpoint store to take each ack before the ack completes. Default false: completes at once. */
  readonly confirmAcks?: boolean
}

/** The service could not be reached, or the settings are unusable, when the transport started. */
export const KinesisConnectionError = connection.KinesisConnectionError
/** The service could not be reached, or the settings are unusable, when the transport started. */
export type KinesisConnectionError = connection.KinesisConnectionError

/** A topic whose stream name would be longer than Kinesis allows; the cause of the `PublishError` / `SubscribeError`. */
export const InvalidName = connection.InvalidName
/** A topic whose stream name would be longer than Kinesis allows; the cause of the `PublishError` / `SubscribeError`. */
export type InvalidName = connection.InvalidName

/** The stream name of a topic. */
export const streamName: (prefix: string, topic: string) => string = topology.streamName

/** The transport: the two ports' operations, the features it declares, and its name in the lease table. */
export interface KinesisTransport extends internal.KinesisDriver {}

const settings = (options: Options): connection.Settings => {
  const visibilityTimeout = Duration.decode(options.visibilityTimeout ?? "30 seconds")
  return {
    endpoint: options.endpoint,
    region: options.region ?? process.env["AWS_REGION"] ?? "us-east-1",
    clientConfig: options.clientConfig ?? {},
    streamPrefix: options.streamPrefix ?? "bulwark-",
    shardCount: Math.max(1, Math.floor(options.shardCount ?? 1)),
    visibilityTimeout,
    leaseDuration: Duration.decode(options.leaseDuration ?? visibilityTimeout),
    pollInterval: Duration.decode(options.pollInterval ?? "250 millis"),
    fetchLimit: Math.max(1, Math.min(10_000, options.fetchLimit ?? 1000)),
    maxBuffered: Math.max(1, options.maxBuffered ?? 2000),
    maxBatch: Math.max(1, options.maxBatch ?? 100),
    idleRelease: Duration.decode(options.idleRelease ?? visibilityTimeout),
    connectTimeout: Duration.decode(options.connectTimeout ?? "10 seconds"),
    reconnectTimeout: Duration.decode(options.reconnectTimeout ?? "30 seconds"),
    socketTimeout: Duration.decode(options.socketTimeout ?? "30 seconds"),
    confirmAcks: options.confirmAcks ?? false
  }
}

/** Connects and answers the transport; its readers release their leases and its client closes with the scope. */
export const make = (options: Options = {}): Effect.Effect<KinesisTransport, KinesisConnectionError, Scope.Scope | CheckpointStore> =>
  internal.make(settings(options))

/** Provides `Transport.Publisher` and `Transport.Subscriber` backed by Kinesis; needs a `CheckpointStore`. */
export const layer = (
  options: Options = {}
): Layer.Layer<Transport.Publisher | Transport.Subscriber, KinesisConnectionError, CheckpointStore> =>
  Driver.layer(make(options), { system: "aws_kinesis" })

/** `BULWARK_KINESIS_ENDPOINT` (default: AWS's) and `BULWARK_KINESIS_STREAM_PREFIX` (default `bulwark-`). */
export const config: Config.Config<{ readonly endpoint: Option.Option<string>; readonly streamPrefix: string }> = Config.all({
  endpoint: Config.option(Config.string("BULWARK_KINESIS_ENDPOINT")),
  streamPrefix: Config.string("BULWARK_KINESIS_STREAM_PREFIX").pipe(Config.withDefault("bulwark-"))
})

/** {@link layer} with the endpoint and stream prefix read from {@link config}; `options` sets the rest. */
export const layerConfig = (
  options: Omit<Options, "endpoint" | "streamPrefix"> = {}
): Layer.Layer<Transport.Publisher | Transport.Subscriber, KinesisConnectionError | ConfigError.ConfigError, CheckpointStore> =>
  Layer.unwrapEffect(Effect.map(config, (read) =>
    layer({
      ...options,
      streamPrefix: read.streamPrefix,
      ...(Option.isSome(read.endpoint) ? { endpoint: read.endpoint.value } : {})
    })))

