/**
 * The Kinesis client: settings, the typed errors of the transport and of its calls, and the connection check.
 * Kinesis is HTTP: there is no connection to keep, so no supervised connection either; a call that fails is
 * retried where it is made (the publisher, the shard readers).
 */
import { KinesisClient, type KinesisClientConfig, ListStreamsCommand } from "@aws-sdk/client-kinesis"
import { Failure } from "@bulwark/core"
import * as Driver from "@bulwark/transport/Driver"
import { NodeHttpHandler } from "@smithy/node-http-handler"
import { Data, Duration, Effect, type Scope } from "effect"

/** Settings with every default applied. */
export interface Settings {
  readonly endpoint: string | undefined
  readonly region: string
  readonly clientConfig: KinesisClientConfig
  readonly streamPrefix: string
  readonly shardCount: number
  readonly visibilityTimeout: Duration.Duration
  readonly leaseDuration: Duration.Duration
  readonly pollInterval: Duration.Duration
  readonly fetchLimit: number
  readonly maxBuffered: number
  readonly maxBatch: number
  readonly idleRelease: Duration.Duration
  readonly connectTimeout: Duration.Duration
  readonly reconnectTimeout: Duration.Duration
  readonly socketTimeout: Duration.Duration
  readonly confirmAcks: boolean
}

/** The service could not be reached, or the settings are unusable, when the transport started. */
export class KinesisConnectionError extends Data.TaggedError("KinesisConnectionError")<{
  /** The endpoint as given, password masked (`default` for AWS's). */
  readonly endpoint: string
  readonly cause: unknown
}> {
  // The service may come back: a supervisor retrying the start is right to.
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }

  override get message(): string {
    const cause = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `cannot reach Kinesis at ${this.endpoint}: ${cause}`
  }
}

/** A topic whose stream name Kinesis does not accept (longer than 128 characters). Permanent. */
export class InvalidName extends Data.TaggedError("InvalidName")<{
  readonly topic: string
  readonly stream: string
}> {
  // The same name fails the same way every time: nothing to retry.
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: "schema" }
  }

  override get message(): string {
    return `topic ${JSON.stringify(this.topic)} maps to the stream name ${JSON.stringify(this.stream)}, longer than Kinesis's 128 characters`
  }
}

/** A call to the service failed; `cause` is the client's error. */
export class CallError extends Data.TaggedError("CallError")<{ readonly cause: unknown }> {}

/** The error name the client gives (`ResourceNotFoundException`, …). */
export const nameOf = (error: unknown): string | undefined => {
  const name = (error as { name?: unknown } | null)?.name
  return typeof name === "string" ? name : undefined
}

/** Failures worth retrying: the network, the service, throttling; not the request itself. */
export const isTransient = (error: unknown): boolean => {
  const name = nameOf(error)
  if (name === "ProvisionedThroughputExceededException" || name === "LimitExceededException" || name === "KMSThrottlingException") return true
  const fault = (error as { $fault?: unknown } | null)?.$fault
  const status = (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode
  return fault === undefined || fault === "server" || status === undefined || status >= 500 || name === "ThrottlingException"
}

/** The stream (or shard) is not there. */
export const isMissing = (error: unknown): boolean => nameOf(error) === "ResourceNotFoundException"

/**
 * Runs a client call; the signal is aborted when the effect is interrupted. The calls made per message (reads,
 * publishes) do not hand it to the client: any per-call option turns the client's handler cache off for that call
 * and empties it (see {@link connect}).
 */
export const call = <A>(run: (signal: AbortSignal) => Promise<A>): Effect.Effect<A, CallError> =>
  Effect.tryPromise({ try: run, catch: (cause) => new CallError({ cause }) })

/**
 * Opens the client (closed with the scope) and checks the service answers. The client gets an HTTP/1.1
 * handler unless `clientConfig` names one: every call the transport makes is plain request and answer, and
 * kinesalite (the emulator) speaks HTTP/1.1 only, where the client's default HTTP/2 handler fails.
 */
export const connect = (settings: Settings): Effect.Effect<KinesisClient, KinesisConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    const endpoint = settings.endpoint === undefined ? "default" : Driver.redactUrl(settings.endpoint)
    const client = yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          new KinesisClient({
            region: settings.region,
            // A stalled call fails after `socketTimeout` (socket inactivity) instead of hanging (for minutes, by the SDK's defaults).
            requestHandler: new NodeHttpHandler({
              httpAgent: { keepAlive: true, maxSockets: 64 },
              socketTimeout: Duration.toMillis(settings.socketTimeout),
              connectionTimeout: Duration.toMillis(settings.connectTimeout)
            }),
            // The middleware stack is resolved once per command class instead of on every call. Safe here: nothing
            // changes this client's stack after it is built. It holds only for calls made without per-call options,
            // so reads and publishes pass none: an interrupted read returns at once and its request (which Kinesis
            // answers at once) is left to end.
            cacheMiddleware: true,
            ...settings.clientConfig,
            ...(settings.endpoint === undefined ? {} : { endpoint: settings.endpoint })
          }),
        catch: (cause) => new KinesisConnectionError({ endpoint, cause })
      }),
      (client) => Effect.sync(() => client.destroy())
    )
    yield* call((abortSignal) => client.send(new ListStreamsCommand({ Limit: 1 }), { abortSignal })).pipe(
      Effect.timeoutFail({
        duration: settings.connectTimeout,
        onTimeout: () => new CallError({ cause: `no answer within ${Duration.format(settings.connectTimeout)}` })
      }),
      Effect.mapError((error) => new KinesisConnectionError({ endpoint, cause: error.cause }))
    )
    return client
  })
