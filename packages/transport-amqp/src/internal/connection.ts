/**
 * The RabbitMQ connection: one attempt (`connectOnce`), kept alive by the shared driver base's supervised
 * connection, which re-establishes it in the background after a loss.
 */
import * as Driver from "@bulwark/transport/Driver"
import amqp from "amqplib"
import { Deferred, Duration, Effect, Exit, FiberId, type Scope } from "effect"
import { AmqpConnectionError, closeQuietly, withHeartbeat } from "./protocol.js"

/** What connecting needs. */
export interface ConnectionSettings {
  readonly url: string
  /** The URL with its password masked, for logs and errors. */
  readonly shownUrl: string
  readonly connectTimeout: Duration.Duration
  readonly heartbeatSeconds: number
}

/** One connection attempt, failing with `AmqpConnectionError` within the connect timeout. */
export const connectOnce = (settings: ConnectionSettings): Effect.Effect<amqp.ChannelModel, AmqpConnectionError> => {
  const { connectTimeout, shownUrl } = settings
  // amqplib takes the heartbeat from the URL only; a heartbeat already in the URL wins.
  const connectUrl = withHeartbeat(settings.url, settings.heartbeatSeconds)
  return Effect.async<amqp.ChannelModel, AmqpConnectionError>((resume) => {
    let abandoned = false
    // Nagle's algorithm would hold back small frames such as acks; the socket timeout bounds the TCP handshake.
    amqp.connect(connectUrl, { noDelay: true, timeout: Duration.toMillis(connectTimeout) }).then(
      (model) => {
        // An attempt that timed out may still succeed later: close it rather than leak it.
        if (abandoned) model.close().catch(() => undefined)
        else resume(Effect.succeed(model))
      },
      (cause) => resume(Effect.fail(new AmqpConnectionError({ url: shownUrl, cause })))
    )
    return Effect.sync(() => {
      abandoned = true
    })
  }).pipe(
    Effect.timeoutFail({
      duration: connectTimeout,
      onTimeout: () => new AmqpConnectionError({ url: shownUrl, cause: `no answer within ${Duration.format(connectTimeout)}` })
    })
  )
}

// Each connection's close, listened for from the moment it opens so that a close before anyone waits still counts.
const closed = new WeakMap<amqp.ChannelModel, Deferred.Deferred<void>>()

const watch = (model: amqp.ChannelModel) =>
  Effect.sync(() => {
    const gone = Deferred.unsafeMake<void>(FiberId.none)
    closed.set(model, gone)
    // Without an error listener a dropped socket would crash the process; `close` follows and is what we act on.
    model.on("error", () => undefined)
    model.once("close", () => Deferred.unsafeDone(gone, Exit.void))
  })

/** Completes when the connection closes (by the broker, the network or us). */
const lost = (model: amqp.ChannelModel): Effect.Effect<void> => {
  const gone = closed.get(model)
  return gone === undefined ? Effect.void : Deferred.await(gone)
}

/** The supervised connection: fails at start like one attempt, then reconnects by itself until the scope closes. */
export const supervised = (
  settings: ConnectionSettings
): Effect.Effect<Driver.SupervisedConnection<amqp.ChannelModel, AmqpConnectionError>, AmqpConnectionError, Scope.Scope> =>
  Driver.supervisedConnection({
    name: `transport-amqp: connection to ${settings.shownUrl}`,
    connect: Effect.tap(connectOnce(settings), watch),
    lost,
    close: closeQuietly,
    waitFor: settings.connectTimeout,
    timeout: () => new AmqpConnectionError({ url: settings.shownUrl, cause: "not reconnected within the connect timeout" })
  })
