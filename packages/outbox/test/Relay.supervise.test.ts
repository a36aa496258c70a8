/** The relay under supervision: a defect stops it loudly (transient faults: test/outbox-faults.test.ts). */
import { Supervise } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Logger, Option } from "effect"
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
