/** The relay under supervision: a defect stops it loudly (transient faults: test/outbox-faults.test.ts). */
import { Failure, Supervise } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { expect, it } from "@effect/vitest"
import { Cause, type Context, Effect, Exit, Layer, Logger, Option } from "effect"
import * as Outbox from "../src/Outbox.js"
import * as MemoryOutboxStore from "../src/OutboxStore/Memory.js"
import * as Relay from "../src/Relay.js"

const encoder = new TextEncoder()
const raw = (id: string): Transport.OutgoingMessage => ({ id, key: "", payload: encoder.encode(id), headers: {} })

const capture = () => {
  const lines: Array<{ readonly level: string; readonly message: string }> = []
  const logger = Logger.make(({ logLevel, message }) => {
    lines.push({ level: logLevel.label, message: String(Array.isArray(message) ? message[0] : message) })
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

it.live("a publisher that dies (a defect, not a fault) stops Relay.run loudly: Fatal log, `failed` health, the cause surfaces", () => {
  const { layer, lines } = capture()
  return Effect.gen(function*() {
    yield* MemoryOutboxStore.transaction(Outbox.appendMessages("t", [raw("m-1")]))
    const exit = yield* Relay.run({ relayId: "doomed-by-a-bug", pollInterval: "50 millis" }).pipe(
      Effect.provideService(Transport.Publisher, { publish: () => Effect.die(new Error("a bug in the publisher")) }),
      Effect.timeout("10 seconds"),
      Effect.exit
    )
    expect(Exit.isFailure(exit) && Option.isSome(Cause.dieOption(exit.cause))).toBe(true)
    expect(lines.some((l) => l.level === "FATAL" && l.message.startsWith("outbox-relay:doomed-by-a-bug: stopped"))).toBe(true)
    expect((yield* Supervise.health).get("outbox-relay:doomed-by-a-bug")).toBe("failed")
  }).pipe(Effect.provide(MemoryOutboxStore.layer()), Effect.provide(layer))
})

it.live("with layerMonitored, a relay that gives up ends the program guarded by Relay.guard with RelayFailed", () =>
  Effect.gen(function*() {
    yield* MemoryOutboxStore.transaction(Outbox.appendMessages("t", [raw("m-1")]))
    const exit = yield* Relay.guard(Effect.never).pipe(
      Effect.provide(Relay.layerMonitored({ relayId: "monitored-bug", pollInterval: "50 millis" }).pipe(
        Layer.provide(Layer.succeed(Transport.Publisher, { publish: () => Effect.die(new Error("a bug in the publisher")) }))
      )),
      Effect.timeout("10 seconds"),
      Effect.exit
    )
    expect(Exit.isFailure(exit)).toBe(true)
    const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
    expect(Option.isSome(failure) && failure.value._tag).toBe("RelayFailed")
    const relayFailed = Option.getOrThrow(failure) as Relay.RelayFailed
    expect(relayFailed.relayId).toBe("monitored-bug")
    expect(Option.isSome(Cause.dieOption(relayFailed.cause))).toBe(true)
    expect(relayFailed.message).toContain("a bug in the publisher")
    expect((yield* Failure.classify(relayFailed)).classification).toBe("permanent")
  }).pipe(Effect.provide(MemoryOutboxStore.layer()), Effect.provide(capture().layer)))

it.live("transient faults do not trip the monitor: the guarded program finishes with its own result once the rows are out", () =>
  Effect.gen(function*() {
    yield* MemoryOutboxStore.transaction(Outbox.appendMessages("t", [raw("m-1"), raw("m-2")]))
    let calls = 0
    const published: Array<string> = []
    const flaky: Context.Tag.Service<Transport.Publisher> = {
      publish: (topic, messages) =>
        Effect.suspend(() =>
          ++calls <= 3
            ? Effect.fail(new Transport.PublishError({ topic, cause: "broker away" }))
            : Effect.sync(() => void published.push(...messages.map((m) => m.id)))
        )
    }
    const result = yield* Relay.guard(
      Effect.gen(function*() {
        while (published.length < 2) yield* Effect.sleep("20 millis")
        return "done" as const
      })
    ).pipe(
      Effect.provide(Relay.layerMonitored({ relayId: "monitored-flaky", pollInterval: "50 millis", backoffBase: "10 millis" }).pipe(
        Layer.provide(Layer.succeed(Transport.Publisher, flaky))
      )),
      Effect.timeout("10 seconds")
    )
    expect(result).toBe("done")
    expect(calls).toBeGreaterThan(3)
    expect([...new Set(published)].sort()).toEqual(["m-1", "m-2"])
  }).pipe(Effect.provide(MemoryOutboxStore.layer()), Effect.provide(capture().layer)))
