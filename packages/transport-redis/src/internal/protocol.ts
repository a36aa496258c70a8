/**
 * The Redis protocol pieces the driver's parts share: settings, the connection, commands and scripts, and how a
 * message is laid out as a stream entry.
 */
import { Delivery } from "@bulwark/core"
import * as Driver from "@bulwark/transport/Driver"
import { Data, Duration, Effect, Scope } from "effect"
import { Redis, ReplyError, type RedisOptions } from "ioredis"
import * as Scripts from "./scripts.js"

/** Settings with every default applied. */
export interface Settings {
  readonly url: string
  readonly keyPrefix: string
  readonly visibilityTimeout: Duration.Duration
  readonly connectTimeout: Duration.Duration
  readonly reconnectTimeout: Duration.Duration
  readonly socketTimeout: Duration.Duration
  readonly maxLength: number | undefined
  readonly readCount: number
  readonly delayPollInterval: Duration.Duration
  readonly maxRetriesPerRequest: number
  readonly connectionName: string
  readonly persistent: boolean | undefined
  readonly redisOptions: RedisOptions
  readonly confirmAcks: boolean
}

/** The server could not be reached (or the URL is unusable) when a connection was opened. */
export class RedisConnectionError extends Data.TaggedError("RedisConnectionError")<{
  /** The URL with any password masked. */
  readonly url: string
  readonly cause: unknown
}> {
  override get message(): string {
    const cause = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `cannot connect to Redis at ${this.url}: ${cause}`
  }
}

/** Entry field names; everything a message carries travels in them. */
export const Fields = {
  id: "id",
  key: "key",
  headers: "headers",
  payload: "payload",
  /** Deliveries before this copy was written (a nacked copy restarts Redis' delivery count). */
  attempts: "attempts",
  /** A nacked copy is for this group only; other groups acknowledge and skip it. */
  group: "group"
} as const

export const streamKey = (keyPrefix: string, topic: string) => `${keyPrefix}${topic}`
export const delayedKey = (keyPrefix: string, topic: string, group: string) => `${keyPrefix}${topic}:delayed:${group}`

/** The URL as it may appear in errors and logs. */
export const redactUrl = Driver.redactUrl

/** A command failed; `cause` is ioredis' error (a `ReplyError` from the server, or a connection failure). */
export class CommandError extends Data.TaggedError("CommandError")<{ readonly cause: unknown }> {}

/**
 * `promise`, or a rejection once `millis` pass without an answer. ioredis gives a command no bound of its own
 * once its connection is being re-established (its ready check can wait on a hung server for ever), so a
 * publish or ack is bounded here; the command may still be carried out later.
 */
export const within = <A>(promise: Promise<A>, millis: number): Promise<A> =>
  new Promise<A>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`Redis did not answer within ${Duration.format(Duration.millis(millis))}`)),
      millis
    )
    promise.then(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error: unknown) => {
        clearTimeout(timer)
        reject(error)
      }
    )
  })

export const command = <A>(run: () => Promise<A>) => Effect.tryPromise({ try: run, catch: (cause) => new CommandError({ cause }) })

// Redis keeps real time (delays are scored by its clock): the driver's loops run on the wall clock.
export const inRealTime = Driver.inRealTime

export const isReplyError = (error: unknown): boolean => error instanceof ReplyError
export const isNoGroup = (error: unknown): boolean => isReplyError(error) && String((error as Error).message).startsWith("NOGROUP")

/**
 * Opens a connection in the current scope; it is closed when the scope closes. Bounded by `connectTimeout`.
 * `blocksFor` is the longest a command on it may block by design (`XREADGROUP … BLOCK`), added to the socket
 * timeout so that a quiet stream is not taken for a hung server.
 */
export const connect = (
  settings: Settings,
  name: string,
  blocksFor = 0
): Effect.Effect<Redis, RedisConnectionError, Scope.Scope> =>
  inRealTime(Effect.gen(function*() {
    const url = redactUrl(settings.url)
    const parsed = yield* Effect.try({
      try: () => new URL(settings.url),
      catch: (cause) => new RedisConnectionError({ url, cause })
    })
    if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
      return yield* new RedisConnectionError({ url, cause: `unsupported scheme ${parsed.protocol} (use redis: or rediss:)` })
    }
    const redis = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const client = new Redis(settings.url, {
          connectTimeout: Duration.toMillis(settings.connectTimeout),
          maxRetriesPerRequest: settings.maxRetriesPerRequest,
          // ioredis would retry forever at start; here only an established connection reconnects.
          retryStrategy: (times) => Math.min(50 * 2 ** times, 2_000),
          // A server that stops answering (hung, or a network path that drops packets without a reset) would
          // leave every command waiting for ever: past this silence the socket is dropped, the commands in
          // flight fail (transient; they may have been carried out) and the connection is reopened.
          socketTimeout: Duration.toMillis(settings.socketTimeout) + blocksFor,
          ...settings.redisOptions,
          lazyConnect: true,
          connectionName: name
        })
        // Failures surface through the commands that hit them; the event would otherwise crash the process.
        client.on("error", () => {})
        return client
      }),
      (client) => Effect.sync(() => client.disconnect(false))
    )
    yield* Effect.tryPromise({
      try: () => redis.connect(),
      catch: (cause) => new RedisConnectionError({ url, cause })
    }).pipe(
      Effect.timeoutFail({
        duration: settings.connectTimeout,
        onTimeout: () =>
          new RedisConnectionError({ url, cause: `no answer within ${Duration.format(settings.connectTimeout)}` })
      }),
      Effect.tapError(() => Effect.sync(() => redis.disconnect(false)))
    )
    return redis
  }))

export const runScript = (redis: Redis, script: Scripts.Script, args: ReadonlyArray<string | Buffer | number>, binary = false) => {
  const send = (command: "EVALSHA" | "EVAL", head: string) =>
    binary
      ? redis.callBuffer(command, [head, script.keys, ...args])
      : redis.call(command, [head, script.keys, ...args])
  return send("EVALSHA", script.sha).catch((error: unknown) => {
    if (isReplyError(error) && String((error as Error).message).startsWith("NOSCRIPT")) {
      return send("EVAL", script.lua)
    }
    throw error
  })
}

export const text = (value: unknown): string => Buffer.isBuffer(value) ? value.toString("utf8") : String(value)

/** An entry as read: the fields the transport writes, decoded; any others are ignored. */
export interface Entry {
  readonly entryId: string
  readonly id: string | undefined
  readonly key: string | undefined
  readonly headers: Buffer | undefined
  readonly payload: Buffer | undefined
  /** Deliveries before this copy was written; 0 for an original. */
  readonly attempts: number
  /** The group a nacked copy is addressed to. */
  readonly group: string | undefined
}

// Field names compared as bytes, so reading an entry decodes only the values it uses.
export const fieldName = {
  id: Buffer.from(Fields.id),
  key: Buffer.from(Fields.key),
  headers: Buffer.from(Fields.headers),
  payload: Buffer.from(Fields.payload),
  attempts: Buffer.from(Fields.attempts),
  group: Buffer.from(Fields.group)
}

export const asBuffer = (value: unknown): Buffer => Buffer.isBuffer(value) ? value : Buffer.from(String(value))

export const parseEntry = (raw: unknown): Entry | undefined => {
  if (!Array.isArray(raw) || raw.length < 2 || !Array.isArray(raw[1])) return undefined
  const values = raw[1] as Array<unknown>
  let id: string | undefined
  let key: string | undefined
  let headers: Buffer | undefined
  let payload: Buffer | undefined
  let attempts = 0
  let group: string | undefined
  for (let i = 0; i + 1 < values.length; i += 2) {
    const name = asBuffer(values[i])
    const value = asBuffer(values[i + 1])
    if (name.equals(fieldName.payload)) payload = value
    else if (name.equals(fieldName.id)) id = value.toString("utf8")
    else if (name.equals(fieldName.key)) key = value.toString("utf8")
    else if (name.equals(fieldName.headers)) headers = value
    else if (name.equals(fieldName.attempts)) attempts = Number(value.toString("utf8")) || 0
    else if (name.equals(fieldName.group)) group = value.toString("utf8")
  }
  return { entryId: text(raw[0]), id, key, headers, payload, attempts, group }
}

export const parseHeaders = (raw: Buffer | undefined): Record<string, string> => {
  if (raw === undefined) return {}
  const source = raw.toString("utf8")
  try {
    const parsed: unknown = JSON.parse(source)
    if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) {
      const headers: Record<string, string> = {}
      for (const [name, value] of Object.entries(parsed)) headers[name] = String(value)
      return headers
    }
  } catch {
    // Falls through: the raw text is kept so nothing is lost.
  }
  return { "bulwark-redis-invalid-headers": source }
}

export const messageFields = (message: Delivery.Message, headers: Readonly<Record<string, string>>) => {
  const fields: Array<string | Buffer> = [Fields.id, message.id]
  if (message.key !== "") fields.push(Fields.key, message.key)
  if (Object.keys(headers).length > 0) fields.push(Fields.headers, JSON.stringify(headers))
  fields.push(Fields.payload, Buffer.from(message.payload.buffer, message.payload.byteOffset, message.payload.byteLength))
  return fields
}

