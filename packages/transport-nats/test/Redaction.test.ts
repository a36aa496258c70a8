// Issue 17: the configured server URL's password must never reach a log line or an error.
import { describe, expect, it } from "@effect/vitest"
import * as Contract from "@bulwark/transport/Contract"
import { Effect } from "effect"
import { NatsTransport } from "../src/index.js"
import { redactServer } from "../src/internal/nats.js"

const password = Contract.testPassword()

describe("NATS: the URL's password is masked", () => {
  it.live("connecting to a closed port (retried for a second): no log line or error shows the password", () =>
    Effect.gen(function*() {
      const port = yield* Contract.closedPort
      const servers = `nats://bulwark:${password}@127.0.0.1:${port}, ${password}@127.0.0.1:${port}`
      const texts = yield* Contract.visibleTexts(Effect.scoped(NatsTransport.make({ servers, connectTimeout: "1 second", connectRetry: "1 second" })))
      Contract.expectNoPassword(texts, password)
      // what is shown still says where it tried to connect
      expect(texts.join("\n")).toContain(`nats://bulwark:***@127.0.0.1:${port}`)
    }))

  it("redactServer masks user:password, a bare token, and passwords with raw '@' or '/', with or without a scheme", () => {
    expect(redactServer("nats://user:pw@host:4222")).toBe("nats://user:***@host:4222")
    expect(redactServer("user:pw@host:4222")).toBe("user:***@host:4222")
    expect(redactServer("nats://tok3n@host:4222")).toBe("nats://***@host:4222")
    expect(redactServer("tls://u:p@ss/w@rd@host")).toBe("tls://u:***@host")
    expect(redactServer("nats://127.0.0.1:4222")).toBe("nats://127.0.0.1:4222")
    expect(redactServer("127.0.0.1:4222")).toBe("127.0.0.1:4222")
  })
})
