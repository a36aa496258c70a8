/**
 * The NATS JetStream transport: `Transport.Publisher` and `Transport.Subscriber` over one NATS connection.
 *
 * - one stream per topic (`<prefix>_<topic>`, subject `<prefix>.<topic>`, names escaped), created by the
 *   first publish or subscribe, so messages published before the first subscriber wait for it;
 * - one durable pull consumer per topic and group (explicit ack, ack wait = the visibility timeout,
 *   delivering everything the stream holds), so groups fan out and a group's subscribers compete;
 * - `nack` is a NAK (with the delay when given), `deadLetter` publishes a copy to `<topic>.dlq` and TERMs
 *   the original, a message delivered more than `maxDeliver` times is dead-lettered by the driver;
 * - publishing sets `Nats-Msg-Id` to the message id: the stream drops a repeated id within `dedupeWindow`.
 */
import type { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { Config, Duration, Effect, Layer, Option, type Redacted, type Scope } from "effect"
import * as internal from "./internal/nats.js"

/** The server could not be reached (or has no JetStream) when the transport started. */
export const NatsConnectionError = internal.ConnectionError
/** The server could not be reached (or has no JetStream) when the transport started. */
export type NatsConnectionError = internal.ConnectionError

/** @deprecated Renamed {@link NatsConnectionError}, as the other drivers name theirs. */
export const ConnectionError = internal.ConnectionError
/** @deprecated Renamed {@link NatsConnectionError}, as the other drivers name theirs. */
export type ConnectionError = internal.ConnectionError

/** The transport's options are unusable (a bad prefix, a negative duration). */
export const OptionsError = internal.OptionsError
/** The transport's options are unusable (a bad prefix, a negative duration). */
export type OptionsError = internal.OptionsError

/** A message NATS cannot carry as given; the `cause` of a `PublishError`, classified permanent `schema`. */
export const InvalidMessageError = internal.InvalidMessageError
/** A message NATS cannot carry as given; the `cause` of a `PublishError`, classified permanent `schema`. */
export type InvalidMessageError = internal.InvalidMessageError

/** The header carrying a message's ordering key. */
export const keyHeader = internal.keyHeader

/** Settings of the NATS transport; every field has a default. */
export interface Options {
  /** Server URL(s); a string may list several separated by commas. Default `nats://127.0.0.1:4222`. */
  readonly servers?: string | ReadonlyArray<string>
  /** Connection name shown by the server. Default `bulwark-transport-nats`. */
  readonly name?: string
  /** User for user/password authentication. */
  readonly user?: string
  /** Password for user/password authentication. */
  readonly password?: Redacted.Redacted<string>
  /** Token for token authentication. */
  readonly token?: Redacted.Redacted<string>
  /** Starts every stream name (`<prefix>_…`) and subject (`<prefix>.…`); 1-32 of `[A-Za-z0-9-]`. Default `bulwark`. */
  readonly prefix?: string
  /** How long one connection attempt may take. Default 5 s. */
  readonly connectTimeout?: Duration.DurationInput
  /**
   * How long start keeps retrying a server that is away (refused, timed out, JetStream not up yet) before it
   * fails with `ConnectionError`, so a process starting during a broker restart waits for it. Default 30 s; 0 turns it off.
   */
  readonly connectRetry?: Duration.DurationInput
  /** Timeout of JetStream API calls and publish acknowledgements. Default 5 s. */
  readonly requestTimeout?: Duration.DurationInput
  /** Pause between reconnect attempts after a connection loss (the client retries forever). Default 500 ms. */
  readonly reconnectTimeWait?: Duration.DurationInput
  /** Consumer ack wait, the visibility timeout: an unsettled delivery comes back after it. Default 30 s. */
  readonly ackWait?: Duration.DurationInput
  /** Stream duplicate window: a repeated `Nats-Msg-Id` within it is dropped. `0` turns it off. Default 2 minutes. */
  readonly dedupeWindow?: Duration.DurationInput
  /** Stream max age: older messages are discarded even if unconsumed. `0` keeps them forever. Default 0. */
  readonly maxAge?: Duration.DurationInput
  /** Deliveries after which the driver dead-letters a message itself. Keep it above the pipeline's `maxAttempts`. Default 20. */
  readonly maxDeliver?: number
  /** Consumer max ack pending (unsettled messages per group). Default: the server's (1000). */
  readonly maxAckPending?: number
  /** Messages per pull request; a subscriber holds or requests at most two batches beyond what it handed out. Default 128. */
  readonly batchSize?: number
  /** How long one pull request waits on the server. At least 1 s. Default 5 s. */
  readonly pullExpires?: Duration.DurationInput
  /** Stream replicas (clustered servers only). Default 1. */
  readonly replicas?: number
  /** Stream storage. Default `"file"` (survives a broker restart). */
  readonly storage?: "file" | "memory"
  /** Wait for the server to confirm each ack (one round trip per ack). Default false. */
  readonly confirmAcks?: boolean
}

/** A running NATS transport: the ports' operations plus the connection, for inspection. */
export interface NatsTransport extends internal.NatsTransport {}

/** Connects and returns the transport; the connection is drained and closed when the scope closes. */
export const make = (options: Options = {}): Effect.Effect<NatsTransport, NatsConnectionError | OptionsError, Scope.Scope> =>
  internal.make(options)

/** Provides `Transport.Publisher` and `Transport.Subscriber` from one NATS connection. */
export const layer = (options: Options = {}): Layer.Layer<Transport.Publisher | Transport.Subscriber, NatsConnectionError | OptionsError> =>
  Driver.layer(make(options), { system: "nats" })

/**
 * The options read from configuration: `BULWARK_NATS_URL` (default `nats://127.0.0.1:4222`, comma-separated for
 * several), `BULWARK_NATS_PREFIX`, `BULWARK_NATS_USER`, `BULWARK_NATS_PASSWORD`, `BULWARK_NATS_TOKEN`,
 * `BULWARK_NATS_CONNECT_TIMEOUT`, `BULWARK_NATS_CONNECT_RETRY`, `BULWARK_NATS_ACK_WAIT`, `BULWARK_NATS_DEDUPE_WINDOW`, `BULWARK_NATS_MAX_AGE`,
 * `BULWARK_NATS_MAX_DELIVER`, `BULWARK_NATS_BATCH_SIZE`.
 */
export const config: Config.Config<Options> = Config.all({
  servers: Config.string("BULWARK_NATS_URL").pipe(Config.withDefault("nats://127.0.0.1:4222")),
  prefix: Config.string("BULWARK_NATS_PREFIX").pipe(Config.withDefault("bulwark")),
  user: Config.option(Config.string("BULWARK_NATS_USER")),
  password: Config.option(Config.redacted("BULWARK_NATS_PASSWORD")),
  token: Config.option(Config.redacted("BULWARK_NATS_TOKEN")),
  connectTimeout: Config.duration("BULWARK_NATS_CONNECT_TIMEOUT").pipe(Config.withDefault(Duration.seconds(5))),
  connectRetry: Config.duration("BULWARK_NATS_CONNECT_RETRY").pipe(Config.withDefault(Duration.seconds(30))),
  ackWait: Config.duration("BULWARK_NATS_ACK_WAIT").pipe(Config.withDefault(Duration.seconds(30))),
  dedupeWindow: Config.duration("BULWARK_NATS_DEDUPE_WINDOW").pipe(Config.withDefault(Duration.minutes(2))),
  maxAge: Config.duration("BULWARK_NATS_MAX_AGE").pipe(Config.withDefault(Duration.zero)),
  maxDeliver: Config.integer("BULWARK_NATS_MAX_DELIVER").pipe(Config.withDefault(20)),
  batchSize: Config.integer("BULWARK_NATS_BATCH_SIZE").pipe(Config.withDefault(128))
}).pipe(Config.map(({ password, token, user, ...rest }): Options => ({
  ...rest,
  ...Option.match(user, { onNone: () => ({}), onSome: (value) => ({ user: value }) }),
  ...Option.match(password, { onNone: () => ({}), onSome: (value) => ({ password: value }) }),
  ...Option.match(token, { onNone: () => ({}), onSome: (value) => ({ token: value }) })
})))

/** {@link layer} with options from {@link config}; `overrides` win over configuration. */
export const layerConfig = (
  overrides: Options = {}
): Layer.Layer<Transport.Publisher | Transport.Subscriber, NatsConnectionError | OptionsError | import("effect").ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(config, (fromConfig) => layer({ ...fromConfig, ...overrides })))
