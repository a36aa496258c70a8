import { Database } from "@bulwark/sql"
import { expect, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Stream } from "effect"
import * as PostgresTransport from "../src/PostgresTransport.js"
import { postgresUrl, uniqueTable } from "./helpers.js"

const encoder = new TextEncoder()

layer(Database.layerPostgres({ url: postgresUrl }), { excludeTestServices: true, timeout: "30 seconds" })("postgres transport", (it) => {
  it.scoped("a waiting subscriber wakes on NOTIFY, long before its poll interval", () =>
    Effect.gen(function*() {
      const table = uniqueTable("wake")
      yield* Effect.addFinalizer(() => PostgresTransport.drop(table).pipe(Effect.orDie))
      const transport = yield* PostgresTransport.make({ table, pollInterval: "1 minute" })
      const received = yield* transport.subscribe("wake").pipe(Stream.take(1), Stream.runCollect, Effect.fork)
      // Let the subscription find the queue empty and start waiting.
      yield* Effect.sleep("300 millis")
      yield* transport.publish("wake", [{ id: "w-1", key: "", payload: encoder.encode("hi"), headers: {} }])
      const [delivery] = yield* received.await.pipe(
        Effect.flatten,
        Effect.timeout("10 seconds")
      )
      expect(delivery!.message.id).toBe("w-1")
      yield* delivery!.ack
    }))

  it.scoped("an unusable table name is a typed error", () =>
    Effect.gen(function*() {
      const error = yield* PostgresTransport.make({ table: "queue; DROP TABLE x" }).pipe(Effect.flip)
      expect(error._tag).toBe("InvalidTableName")
    }))

  it.scoped("a settle after the visibility timeout expired fails with DeliveryError and settles nothing", () =>
    Effect.gen(function*() {
      const table = uniqueTable("receipt")
      yield* Effect.addFinalizer(() => PostgresTransport.drop(table).pipe(Effect.orDie))
      const transport = yield* PostgresTransport.make({ table, visibilityTimeout: "200 millis", pollInterval: "50 millis" })
      yield* transport.publish("r", [{ id: "r-1", key: "", payload: encoder.encode("x"), headers: {} }])
      const [first, second] = yield* transport.subscribe("r").pipe(Stream.take(2), Stream.runCollect)
      expect(second!.attempt).toBe(2)
      const stale = yield* first!.ack.pipe(Effect.flip)
      expect(stale._tag).toBe("DeliveryError")
      yield* second!.ack
    }))

  it.scoped("a settle whose message is gone already (its own earlier try landed, or a later delivery settled it) succeeds", () =>
    Effect.gen(function*() {
      const table = uniqueTable("settled")
      yield* Effect.addFinalizer(() => PostgresTransport.drop(table).pipe(Effect.orDie))
      const transport = yield* PostgresTransport.make({ table, visibilityTimeout: "200 millis", pollInterval: "50 millis" })
      yield* transport.publish("g", [{ id: "g-1", key: "", payload: encoder.encode("x"), headers: {} }])
      const [first, second] = yield* transport.subscribe("g").pipe(Stream.take(2), Stream.runCollect)
      yield* second!.ack
      // The stale receipt finds no row: the message will not come back, which is all an ack promises.
      yield* first!.ack
      const sql = yield* SqlClient.SqlClient
      expect(yield* sql`SELECT id FROM ${sql(table)}`).toEqual([])
    }))
})
