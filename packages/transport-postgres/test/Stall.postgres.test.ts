/**
 * A PostgreSQL server that stops answering with its connections up (hung, or a network path that drops packets
 * without a reset; TCP reports nothing), put between the transport and the shared server by a proxy that
 * holds what the client sends. Without a query timeout a publish, and an interruption of it, waited as long as
 * the server did.
 */
import { Database } from "@bulwark/sql"
import { it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as PostgresTransport from "../src/PostgresTransport.js"
import * as FaultProxy from "../../transport/test/support/FaultProxy.js"
import { postgresUrl, uniqueTable } from "./helpers.js"

const encoder = new TextEncoder()

it.live("a server that stops answering: a publish fails (transient) within the query timeout, the next works once it answers, and closing does not hang", () =>
  Effect.gen(function*() {
    const table = uniqueTable("stall")
    const target = new URL(postgresUrl)
    yield* Effect.addFinalizer(() =>
      PostgresTransport.drop(table).pipe(Effect.provide(Database.layerPostgres({ url: postgresUrl })), Effect.orDie)
    )
    yield* FaultProxy.expectStalledPublishFails({
      port: Number(target.port || 5432),
      make: (port) => {
        const through = new URL(postgresUrl)
        through.host = `127.0.0.1:${port}`
        return Effect.flatMap(
          Layer.build(Database.layerPostgres({ url: through.toString(), queryTimeout: "3 seconds" })),
          (context) => PostgresTransport.make({ table }).pipe(Effect.provide(context))
        )
      },
      topic: "stall",
      message: (id) => ({ id, key: "k", payload: encoder.encode(id), headers: {} }),
      within: "15 seconds",
      closeWithin: "30 seconds"
    })
  }).pipe(Effect.scoped), 120_000)
