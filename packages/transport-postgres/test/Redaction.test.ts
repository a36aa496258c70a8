// Issue 17: the configured URL's password must never reach a log line or an error (the NATS driver leaked it).
import { Database } from "@bulwark/sql"
import { describe, it } from "@effect/vitest"
import * as Contract from "@bulwark/transport/Contract"
import { Effect, Layer } from "effect"
import * as PostgresTransport from "../src/PostgresTransport.js"

const password = Contract.testPassword()

describe("Postgres transport: the URL's password is masked", () => {
  it.live("connecting to a closed port: no log line or error shows the password", () =>
    Effect.gen(function*() {
      const port = yield* Contract.closedPort
      const url = `postgres://bulwark:${password}@127.0.0.1:${port}/test`
      // A short retry: the password must stay out of the retries' log lines too, and 30 s of them prove no more.
      const transport = PostgresTransport.layer().pipe(Layer.provide(Database.layerPostgres({ url, connectRetry: "2 seconds" })))
      const texts = yield* Contract.visibleTexts(Effect.scoped(Layer.build(transport)))
      Contract.expectNoPassword(texts, password)
    }))
})
