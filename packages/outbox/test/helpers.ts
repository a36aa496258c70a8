import { Database } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { type Context, Effect, Layer } from "effect"
import * as Outbox from "../src/Outbox.js"

export const postgresUrl = process.env["BULWARK_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"

let counter = 0
/** A table name no other test run shares. */
export const uniqueTable = (label: string) =>
  `bulwark_ob_${label}_${Date.now().toString(36)}_${(counter++).toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`

/** Drops an outbox's tables and forgets its migrations. */
export const dropOutbox = (table: string) => Outbox.drop(table).pipe(Effect.orDie)

/** Drops an inbox table and forgets its migrations. */
export const dropInbox = (table: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`DROP TABLE IF EXISTS ${sql(table)}`
    yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`inbox:${table}`}`
  }).pipe(Effect.orDie)

export interface Published {
  readonly topic: string
  readonly message: Transport.OutgoingMessage
}

/**
 * A publisher that records what it accepted; `behave` may fail a message (by throwing a typed failure) or
 * hang, to script faults. Accepted messages of a call are recorded in order before a hang.
 */
export const recordingPublisher = (
  behave: (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>, call: number) => Effect.Effect<void, unknown> = () => Effect.void
) => {
  const published: Array<Published> = []
  let calls = 0
  const publisher: Context.Tag.Service<Transport.Publisher> = {
    publish: (topic, messages) =>
      Effect.suspend(() => {
        const call = calls++
        return behave(topic, messages, call).pipe(
          Effect.mapError((cause) => new Transport.PublishError({ topic, cause })),
          Effect.tap(() => Effect.sync(() => { for (const message of messages) published.push({ topic, message }) }))
        )
      })
  }
  return { published, publisher, layer: Layer.succeed(Transport.Publisher, publisher) }
}

export type DatabaseLayer = Layer.Layer<SqlClient.SqlClient | Database.Database, unknown>

export const engines = {
  pglite: () => Database.layerPglite() as DatabaseLayer,
  postgres: () => Database.layerPostgres({ url: postgresUrl }) as DatabaseLayer
}
