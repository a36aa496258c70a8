// Issue 17: the configured URL's password must never reach a log line or an error (the NATS driver leaked it).
import { describe, expect, it } from "@effect/vitest"
import * as Contract from "@bulwark/transport/Contract"
import { Effect } from "effect"
import * as AmqpTransport from "../src/AmqpTransport.js"

const password = Contract.testPassword()

describe("AMQP: the URL's password is masked", () => {
  it.live("connecting to a closed port: no log line or error shows the password", () =>
    Effect.gen(function*() {
      const port = yield* Contract.closedPort
      const url = `amqp://guest:${password}@127.0.0.1:${port}/`
      const texts = yield* Contract.visibleTexts(Effect.scoped(AmqpTransport.make({ url, connectTimeout: "1 second" })))
      Contract.expectNoPassword(texts, password)
      expect(texts.join("\n")).toContain(`127.0.0.1:${port}`)
    }))
})
