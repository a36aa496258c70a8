/**
 * The Redis Streams transport: `Transport.Publisher` and `Transport.Subscriber` over one Redis server.
 *
 * - A topic is the stream `${keyPrefix}${topic}`; a message is one entry with the fields `id`, `key`,
 *   `headers` (JSON) and `payload` (raw bytes). Publishing a batch is one `MULTI`/`EXEC`.
 * - A subscription group is a Redis consumer group, created at id `0` (`MKSTREAM`), so a new group reads
 *   the whole retained stream, including what was published before its first subscriber.
 * - At least once: an entry stays pending until `XACK`; entries a consumer holds longer than the visibility
 *   timeout (it died, or is stuck) are taken over with `XAUTOCLAIM` by a live subscription of the group.
 * - `nack` re-adds a copy addressed to the group and acknowledges the original in one Lua script; with a
 *   delay the copy waits in the sorted set `${keyPrefix}${topic}:delayed:${group}` (scored by due time,
 *   Redis server clock) until a subscription's mover re-adds it, again atomically.
 * - `deadLetter` writes the copy with `Delivery.deadLetterHeaders` to `${topic}.dlq` and acknowledges the
 *   original in one Lua script.
 * - Not ordered per key. Persistent only if the server is (`appendonly yes`); detected at start.
 */
import type { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { Config, type ConfigError, Duration, Effect, Layer, type Scope } from "effect"
import type { RedisOptions } from "ioredis"
import * as internal from "./internal/redis.js"

/** Settings of the Redis Streams transport; every field has a default. */
export interface Options {
  /** `redis://[user:password@]host:port[/db]` or `rediss://...`. Default `redis://127.0.0.1:6379`. */
  readonly url?: string
  /** Prepended to every key the transport writes. Default `bulwark:`. */
  readonly keyPrefix?: string
  /** How long a delivery may stay unacknowledged before another consumer takes it over. Default 30 s. */
  readonly visibilityTimeout?: Duration.DurationInput
  /** Bound on opening a connection; past it the layer fails with `RedisConnectionError`. Default 5 s. */
  readonly connectTimeout?: Duration.DurationInput
  /** How long a subscription retries after losing its connection before failing. Default 30 s. */
  readonly reconnectTimeout?: Duration.DurationInput
  /**
   * How long a command waits for any answer before its connection is taken for dead: the socket is dropped, the
   * commands in flight fail with a transient error (a publish may still have been carried out, so it can be
   * repeated) and the connection is reopened. Bounds a publish or ack against a server that hangs instead of
   * closing the connection. Blocking reads add their own block time to it. Default 30 s.
   */
  readonly socketTimeout?: Duration.DurationInput
  /**
   * Approximate `MAXLEN ~` applied on every `XADD`. Default none: streams grow until trimmed elsewhere.
   * Trimming removes entries whether or not every group has acknowledged them, so set it well above any backlog.
   */
  readonly maxLength?: number
  /** Entries read per `XREADGROUP` / `XAUTOCLAIM`. Default 64. */
  readonly readCount?: number
  /** Longest wait between two looks for due delayed nacks. Default 100 ms. */
  readonly delayPollInterval?: Duration.DurationInput
  /** Reconnection attempts a command waits for before it fails (ioredis `maxRetriesPerRequest`). Default 3. */
  readonly maxRetriesPerRequest?: number
  /** `CLIENT SETNAME` prefix of the transport's connections. Default `bulwark`. */
  readonly connectionName?: string
  /** Overrides the detected `features.persistent` (true when the server reports `aof_enabled:1`). */
  readonly persistent?: boolean
  /**
   * Wait for Redis to answer each ack's `XACK` before the ack completes. Default false: an ack completes once
   * queued (acks queued together go out as one `XACK`), and a lost one means a redelivery.
   */
  readonly confirmAcks?: boolean
  /** Further ioredis options (TLS, Sentinel, ...); `lazyConnect` and `connectionName` are the transport's. */
  readonly redisOptions?: RedisOptions
}

/** The server could not be reached, or the URL is unusable, when the transport started. */
export const RedisConnectionError = internal.RedisConnectionError
/** The server could not be reached, or the URL is unusable, when the transport started. */
export type RedisConnectionError = internal.RedisConnectionError

/** Entry field names, for tools that read the streams directly. */
export const Fields = internal.Fields

/** The stream key of a topic. */
export const streamKey: (keyPrefix: string, topic: string) => string = internal.streamKey

/** The sorted set holding a group's delayed nacks of a topic. */
export const delayedKey: (keyPrefix: string, topic: string, group: string) => string = internal.delayedKey

/** The transport: the two ports' operations and the features it declares. */
export interface RedisTransport extends Transport.Driver {}

const settings = (options: Options): internal.Settings => ({
  url: options.url ?? "redis://127.0.0.1:6379",
  keyPrefix: options.keyPrefix ?? "bulwark:",
  visibilityTimeout: Duration.decode(options.visibilityTimeout ?? "30 seconds"),
  connectTimeout: Duration.decode(options.connectTimeout ?? "5 seconds"),
  reconnectTimeout: Duration.decode(options.reconnectTimeout ?? "30 seconds"),
  socketTimeout: Duration.decode(options.socketTimeout ?? "30 seconds"),
  maxLength: options.maxLength,
  readCount: Math.max(1, options.readCount ?? 64),
  delayPollInterval: Duration.decode(options.delayPollInterval ?? "100 millis"),
  maxRetriesPerRequest: options.maxRetriesPerRequest ?? 3,
  connectionName: options.connectionName ?? "bulwark",
  persistent: options.persistent,
  redisOptions: options.redisOptions ?? {},
  confirmAcks: options.confirmAcks ?? false
})

/** Connects and answers the transport; its connections close with the scope. Fails fast when unreachable. */
export const make = (options: Options = {}): Effect.Effect<RedisTransport, RedisConnectionError, Scope.Scope> =>
  internal.make(settings(options))

/** Provides `Transport.Publisher` and `Transport.Subscriber` backed by Redis Streams. */
export const layer = (options: Options = {}): Layer.Layer<Transport.Publisher | Transport.Subscriber, RedisConnectionError> =>
  Driver.layer(make(options), { system: "redis" })

/** `BULWARK_REDIS_URL` (default `redis://127.0.0.1:6379`) and `BULWARK_REDIS_KEY_PREFIX` (default `bulwark:`). */
export const config: Config.Config<{ readonly url: string; readonly keyPrefix: string }> = Config.all({
  url: Config.string("BULWARK_REDIS_URL").pipe(Config.withDefault("redis://127.0.0.1:6379")),
  keyPrefix: Config.string("BULWARK_REDIS_KEY_PREFIX").pipe(Config.withDefault("bulwark:"))
})

/** {@link layer} with the URL and key prefix read from {@link config}; `options` sets the rest. */
export const layerConfig = (
  options: Omit<Options, "url" | "keyPrefix"> = {}
): Layer.Layer<Transport.Publisher | Transport.Subscriber, RedisConnectionError | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(config, (read) => layer({ ...options, ...read })))
