/**
 * The NATS connection: start with retry while the server is away, the JetStream API opened on it, reconnect
 * watching (the client itself reconnects forever; this logs each change once and tells the pullers to ask
 * again), and a bounded drain at the end of the scope.
 */
import { Duration, Effect, Redacted, Runtime, Schedule, type Scope } from "effect"
import { connect, type ConnectionOptions, Events, type JetStreamManager, type NatsConnection } from "nats"
import type { Options } from "../NatsTransport.js"
import { ConnectionError, isNoResponders, redactServer, type Resolved } from "./protocol.js"

const connectTo = (resolved: Resolved, options: Options) =>
  Effect.tryPromise({
    try: () => {
      const connectionOptions: ConnectionOptions = {
        servers: [...resolved.servers],
        timeout: resolved.connectTimeout,
        reconnect: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: resolved.reconnectTimeWait,
        waitOnFirstConnect: false,
        name: options.name ?? "bulwark-transport-nats",
        ...(options.user === undefined ? {} : { user: options.user }),
        ...(options.password === undefined ? {} : { pass: Redacted.value(options.password) }),
        ...(options.token === undefined ? {} : { token: Redacted.value(options.token) })
      }
      return connect(connectionOptions)
    },
    catch: (cause) => new ConnectionError({ servers: resolved.servers.map(redactServer), cause })
  })

const closeConnection = (connection: NatsConnection) =>
  Effect.promise(() => connection.drain().catch(() => undefined)).pipe(
    // Draining waits for the server; a dead or hung server must not hang shutdown. A finalizer runs
    // uninterruptibly, and `timeout` waits for an uninterruptible effect: the drain is made interruptible so
    // that the bound holds.
    Effect.interruptible,
    Effect.timeout("5 seconds"),
    Effect.ignore,
    Effect.zipRight(Effect.promise(() => connection.close().catch(() => undefined)))
  )

/**
 * Logs connection losses and recoveries (servers shown redacted) and tells `on` of them; the loop ends by itself
 * when the connection closes.
 */
export const watchConnection = (
  connection: NatsConnection,
  servers: ReadonlyArray<string>,
  on: { readonly onDisconnect: () => void; readonly onReconnect: Effect.Effect<void> }
) =>
  Effect.map(Effect.runtime<never>(), (runtime) => {
    const log = (effect: Effect.Effect<void>) =>
      Runtime.runFork(runtime)(Effect.annotateLogs(effect, { servers: servers.map(redactServer).join(",") }))
    void (async () => {
      for await (const status of connection.status()) {
        if (status.type === Events.Disconnect) {
          on.onDisconnect()
          log(Effect.logWarning("NATS connection lost; reconnecting"))
        } else if (status.type === Events.Reconnect) {
          log(Effect.zipRight(Effect.logInfo("NATS connection re-established"), on.onReconnect))
        }
        else if (status.type === Events.Error) log(Effect.logWarning("NATS connection error", status.data))
      }
    })().catch(() => undefined)
  })

/**
 * Whether a failed start found the server away (down, restarting, JetStream not up yet) rather than refusing
 * this client (authentication, TLS): only the former is worth waiting for.
 */
const isUnreachable = (error: ConnectionError) => {
  const code = (error.cause as { code?: unknown } | undefined)?.code
  return code === "CONNECTION_REFUSED" || code === "CONNECTION_TIMEOUT" || code === "TIMEOUT" ||
    code === "CONNECTION_CLOSED" || code === "DISCONNECT" || code === "503" || isNoResponders(error.cause)
}

/** Connects and opens the JetStream API; a connection whose JetStream API fails is closed, not left reconnecting. */
const connectJetStream = (resolved: Resolved, options: Options) =>
  Effect.flatMap(connectTo(resolved, options), (connection) =>
    Effect.tryPromise({
      try: () => connection.jetstreamManager({ timeout: resolved.requestTimeout }),
      catch: (cause) => new ConnectionError({ servers: resolved.servers.map(redactServer), cause })
    }).pipe(
      Effect.map((jsm) => ({ connection, jsm })),
      Effect.tapError(() => Effect.promise(() => connection.close().catch(() => undefined)))
    ))

/**
 * Retries the start while the server is away (a process starting during a broker restart), with jittered
 * exponential backoff capped at 5 s, for at most `connectRetry`; one warning says so. Other errors fail at once.
 */
const retryStartup = (resolved: Resolved, options: Options) => {
  const connecting = connectJetStream(resolved, options)
  if (resolved.connectRetry === 0) return connecting
  let warned = false
  return Effect.retry(connecting, Schedule.exponential("100 millis").pipe(
    Schedule.either(Schedule.spaced("5 seconds")),
    Schedule.jittered,
    Schedule.upTo(Duration.millis(resolved.connectRetry)),
    Schedule.whileInput(isUnreachable),
    Schedule.tapInput((error: ConnectionError) =>
      warned ? Effect.void : Effect.sync(() => warned = true).pipe(Effect.zipRight(Effect.logWarning(
        `NATS at ${resolved.servers.map(redactServer).join(", ")} is unreachable; retrying for up to ${Duration.format(Duration.millis(resolved.connectRetry))}`,
        error.message
      ))))
  ))
}

/**
 * The connection and its JetStream manager for the scope: opened with {@link retryStartup}, drained and closed
 * when the scope closes.
 */
export const open = (
  resolved: Resolved,
  options: Options
): Effect.Effect<{ readonly connection: NatsConnection; readonly jsm: JetStreamManager }, ConnectionError, Scope.Scope> =>
  Effect.acquireRelease(retryStartup(resolved, options), ({ connection }) => closeConnection(connection))
