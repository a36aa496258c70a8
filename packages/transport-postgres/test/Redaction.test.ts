// Issue 17: the configured URL's password must never reach a log line or an error (the NATS driver leaked it).
import { Database } from "@bulwark/sql"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Layer, Logger, LogLevel } from "effect"
import net from "node:net"
import { inspect } from "node:util"
import * as PostgresTransport from "../src/PostgresTransport.js"

const password = `pw-${Math.random().toString(36).slice(2)}-s3cret`

/** A local port nothing listens on (never one of the shared services). */
const closedPort = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  }))

/**
 * Runs `connect` with every log line captured (all levels, annotations and causes included) and answers
 * each text a user could see: the log lines, the failure's message, its cause, `String`, `inspect` and the
 * pretty cause.
 */
const visibleTexts = <A, E, R>(connect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    const capture = Logger.replace(Logger.defaultLogger, Logger.make((options) => void lines.push(Logger.logfmtLogger.log(options))))
    const exit = yield* connect.pipe(
      Effect.tapErrorCause((cause) => Effect.logError("start failed", cause)),
      Effect.timeout("30 seconds"),
      Effect.exit,
      Effect.provide(Layer.merge(capture, Logger.minimumLogLevel(LogLevel.All)))
    )
    expect(Exit.isFailure(exit)).toBe(true)
    if (Exit.isSuccess(exit)) return lines
    const texts = [...lines, Cause.pretty(exit.cause), inspect(exit.cause, { depth: 10 })]
    for (const error of Cause.failures(exit.cause)) {
      const cause = (error as { cause?: unknown }).cause
      texts.push(String(error), (error as { message?: string }).message ?? "", String(cause), inspect(error, { depth: 10 }))
    }
    return texts
  })

const expectNoPassword = (texts: ReadonlyArray<string>) => {
  expect(texts.length).toBeGreaterThan(0)
  for (const text of texts) {
    expect(text).not.toContain(password)
    expect(text).not.toContain(encodeURIComponent(password))
  }
}

describe("Postgres transport: the URL's password is masked", () => {
  it.live("connecting to a closed port: no log line or error shows the password", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const url = `postgres://bulwark:${password}@127.0.0.1:${port}/test`
      const transport = PostgresTransport.layer().pipe(Layer.provide(Database.layerPostgres({ url })))
      const texts = yield* visibleTexts(Effect.scoped(Layer.build(transport)))
      expectNoPassword(texts)
    }))
})
