// Issue 17: the configured URL's password must never reach a log line or an error (the NATS driver leaked it).
import { describe, expect, it } from "@effect/vitest"
import * as Contract from "@bulwark/transport/Contract"
import { Effect } from "effect"
import { RedisTransport } from "../src/index.js"

const password = Contract.testPassword()

describe("Redis: the URL's password is masked", () => {
  it.live("connecting to a closed port: no log line or error shows the password", () =>
    Effect.gen(function*() {
      const port = yield* Contract.closedPort
      const url = `redis://bulwark:${password}@127.0.0.1:${port}/0`
      const texts = yield* Contract.visibleTexts(Effect.scoped(RedisTransport.make({ url, connectTimeout: "1 second" })))
      Contract.expectNoPassword(texts, password)
      expect(texts.join("\n")).toContain(`127.0.0.1:${port}`)
    }))
})
