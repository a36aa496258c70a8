/**
 * The NATS protocol pieces the driver's parts share: header names, errors, options with defaults applied, and how
 * a message's headers are built.
 */
import { Transport } from "@bulwark/transport"
import { Failure } from "@bulwark/core"
import { Data, Duration, Effect } from "effect"
import { headers as makeHeaders, type MsgHdrs, nanos, StorageType } from "nats"
import type { Options } from "../NatsTransport.js"
import * as Names from "./names.js"

/** Header carrying the ordering key. */
export const keyHeader = "Bulwark-Key"
/** JetStream's deduplication header. */
export const msgIdHeader = "Nats-Msg-Id"
/**
 * Carries the message id when dedupe is off. JetStream replaces a zero duplicate window with its 2-minute
 * default, so the only way to turn dedupe off is not to send `Nats-Msg-Id` at all.
 */
export const idHeader = "Bulwark-Id"

/**
 * A server URL as it may appear in errors and logs: the credentials are masked. NATS takes `user:pass@` or a
 * bare token (`token@`) before the host, with or without a scheme, so everything up to the last `@` that
 * follows the user name is masked (a password with a raw `@` or `/` is masked whole), and a bare token is
 * masked entirely. Unlike `Transport.redactUrl` it never needs the URL to parse, so `host:port` stays visible.
 */
export const redactServer = (server: string): string => {
  const schemeEnd = server.indexOf("://")
  const start = schemeEnd === -1 ? 0 : schemeEnd + 3
  const at = server.lastIndexOf("@")
  if (at < start) return server
  const userinfo = server.slice(start, at)
  const colon = userinfo.indexOf(":")
  const shown = colon === -1 ? "***" : `${userinfo.slice(0, colon)}:***`
  return `${server.slice(0, start)}${shown}${server.slice(at)}`
}

/** The NATS server could not be reached (or has no JetStream) when the transport started. */
export class ConnectionError extends Data.TaggedError("NatsConnectionError")<{
  /** The server URLs, credentials masked ({@link redactServer}). */
  readonly servers: ReadonlyArray<string>
  readonly cause: unknown
}> {
  override get message(): string {
    // Masked again here so an error built elsewhere with raw URLs still cannot print a password.
    return `cannot use NATS JetStream at ${this.servers.map(redactServer).join(", ")}: ${String(this.cause)}`
  }
}

/** The transport's options are unusable (a bad prefix, a negative duration). */
export class OptionsError extends Data.TaggedError("NatsOptionsError")<{
  readonly reason: string
}> {
  override get message(): string {
    return `invalid NATS transport options: ${this.reason}`
  }
}

/**
 * A message or topic that NATS cannot carry as given (bad header name or value, reserved header, bad topic).
 * It is the `cause` of the `PublishError`: retrying cannot help, so it classifies as permanent `schema`.
 */
export class InvalidMessageError extends Data.TaggedError("NatsInvalidMessageError")<{
  readonly reason: string
}> {
  override get message(): string {
    return this.reason
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: "schema" }
  }
}


/** Options with every default applied. */
export interface Resolved {
  readonly servers: ReadonlyArray<string>
  readonly prefix: string
  readonly connectTimeout: number
  readonly connectRetry: number
  readonly requestTimeout: number
  readonly reconnectTimeWait: number
  readonly ackWait: number
  readonly dedupeWindow: number
  readonly maxAge: number
  readonly maxDeliver: number
  readonly maxAckPending: number | undefined
  readonly batchSize: number
  readonly pullExpires: number
  readonly replicas: number
  readonly storage: StorageType
  readonly confirmAcks: boolean
}

const millis = (input: Duration.DurationInput | undefined, fallback: Duration.DurationInput) =>
  Duration.toMillis(Duration.decode(input ?? fallback))

export const resolve = (options: Options): Effect.Effect<Resolved, OptionsError> =>
  Effect.suspend(() => {
    const servers = typeof options.servers === "string"
      ? options.servers.split(",").map((s) => s.trim()).filter((s) => s.length > 0)
      : [...(options.servers ?? ["nats://127.0.0.1:4222"])]
    const resolved: Resolved = {
      servers,
      prefix: options.prefix ?? "bulwark",
      connectTimeout: millis(options.connectTimeout, "5 seconds"),
      connectRetry: millis(options.connectRetry, "30 seconds"),
      requestTimeout: millis(options.requestTimeout, "5 seconds"),
      reconnectTimeWait: millis(options.reconnectTimeWait, "500 millis"),
      ackWait: millis(options.ackWait, "30 seconds"),
      dedupeWindow: millis(options.dedupeWindow, "2 minutes"),
      maxAge: millis(options.maxAge, "0 millis"),
      maxDeliver: options.maxDeliver ?? 20,
      maxAckPending: options.maxAckPending,
      batchSize: options.batchSize ?? 128,
      pullExpires: millis(options.pullExpires, "5 seconds"),
      replicas: options.replicas ?? 1,
      storage: options.storage === "memory" ? StorageType.Memory : StorageType.File,
      confirmAcks: options.confirmAcks ?? false
    }
    const problems = [
      servers.length === 0 ? "no server URL" : undefined,
      Names.isValidPrefix(resolved.prefix) ? undefined : `prefix "${resolved.prefix}" must be 1-32 of [A-Za-z0-9-]`,
      resolved.connectTimeout > 0 ? undefined : "connectTimeout must be positive",
      resolved.connectRetry >= 0 ? undefined : "connectRetry must not be negative",
      resolved.requestTimeout > 0 ? undefined : "requestTimeout must be positive",
      resolved.ackWait >= 1 ? undefined : "ackWait must be at least 1 ms",
      resolved.dedupeWindow >= 0 ? undefined : "dedupeWindow must not be negative",
      resolved.maxAge >= 0 ? undefined : "maxAge must not be negative",
      resolved.maxAge === 0 || resolved.dedupeWindow <= resolved.maxAge ? undefined : "dedupeWindow must not exceed maxAge",
      Number.isInteger(resolved.maxDeliver) && resolved.maxDeliver >= 1 ? undefined : "maxDeliver must be an integer ≥ 1",
      resolved.maxAckPending === undefined || (Number.isInteger(resolved.maxAckPending) && resolved.maxAckPending >= 1)
        ? undefined
        : "maxAckPending must be an integer ≥ 1",
      Number.isInteger(resolved.batchSize) && resolved.batchSize >= 1 ? undefined : "batchSize must be an integer ≥ 1",
      resolved.pullExpires >= 1000 ? undefined : "pullExpires must be at least 1 second",
      Number.isInteger(resolved.replicas) && resolved.replicas >= 1 && resolved.replicas <= 5 ? undefined : "replicas must be 1-5"
    ].filter((p): p is string => p !== undefined)
    return problems.length === 0 ? Effect.succeed(resolved) : Effect.fail(new OptionsError({ reason: problems.join("; ") }))
  })

export const causeText = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/** Whether a publish found nobody answering its subject: the stream was deleted (or JetStream is down). */
export const isNoResponders = (cause: unknown) =>
  (cause as { code?: unknown } | undefined)?.code === "503" || causeText(cause).toLowerCase().includes("no responders")

/** Builds NATS headers for a message; fails on what NATS cannot carry unchanged. */
export const buildHeaders = (message: Transport.OutgoingMessage): MsgHdrs | InvalidMessageError => {
  const headers = makeHeaders()
  for (const [name, value] of Object.entries(message.headers)) {
    const lower = name.toLowerCase()
    if (lower.startsWith("nats-") || lower === keyHeader.toLowerCase() || lower === idHeader.toLowerCase()) {
      return new InvalidMessageError({ reason: `message ${message.id}: header "${name}" is reserved` })
    }
    if (/[\r\n]/.test(value) || value.trim() !== value) {
      return new InvalidMessageError({
        reason: `message ${message.id}: the value of header "${name}" has a line break or surrounding whitespace, which NATS does not carry`
      })
    }
    try {
      headers.set(name, value)
    } catch (cause) {
      return new InvalidMessageError({ reason: `message ${message.id}: header "${name}": ${causeText(cause)}` })
    }
  }
  if (message.key !== "") {
    if (/[\r\n]/.test(message.key) || message.key.trim() !== message.key) {
      return new InvalidMessageError({
        reason: `message ${message.id}: the key has a line break or surrounding whitespace, which NATS headers do not carry`
      })
    }
    headers.set(keyHeader, message.key)
  }
  if (/[\r\n]/.test(message.id) || message.id.trim() !== message.id) {
    return new InvalidMessageError({ reason: `message id ${JSON.stringify(message.id)} has a line break or surrounding whitespace` })
  }
  return headers
}


/** Encodes the protocol's text bodies. */
export const textEncoder = new TextEncoder()
/** The bodies of the replies that settle a JetStream delivery. */
export const ackPayload = textEncoder.encode("+ACK")
export const nakImmediately = textEncoder.encode("-NAK")
export const termPayload = textEncoder.encode("+TERM")
export const nakPayload = (delayMillis: number) =>
  textEncoder.encode(`-NAK ${JSON.stringify({ delay: nanos(Math.ceil(delayMillis)) })}`)
