/**
 * The chaos consumer: `Transport.consume` over NATS with an idempotent handler (`Inbox.process`), one delivery
 * at a time per key (`orderBy: "subject"`). Its effect is a row in `chaos_effects`, numbered in the order
 * effects are applied, in the inbox transaction; it retries in place while the database is away, so a key's
 * next event never overtakes it.
 */
import { Inbox } from "@bulwark/outbox"
import { Database } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import { NatsTransport } from "@bulwark/transport-nats"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer, Logger, LogLevel, Schedule } from "effect"
import { childConfig, effectsTable, Event, inboxTable, topic } from "./config.js"

const config = childConfig()
const services = Layer.mergeAll(
  Inbox.layer({ table: inboxTable }),
  NatsTransport.layer({
    servers: config.natsUrl,
    prefix: config.prefix,
    reconnectTimeWait: "250 millis",
    requestTimeout: "3 seconds",
    // Deliveries whose ack a broker restart lost come back after this.
    ackWait: "10 seconds",
    pullExpires: "2 seconds"
  })
).pipe(Layer.provideMerge(Database.layerPostgres({ url: config.pgUrl, maxConnections: 20, connectRetry: "2 minutes" })))

const program = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  return yield* Transport.consume(topic, (envelope) =>
    Inbox.process(envelope.id, "chaos", sql`INSERT INTO ${sql(effectsTable)} (event_id, key, seq, attempt) VALUES (${envelope.id}, ${envelope.data.key}, ${envelope.data.seq}, ${envelope.attempt ?? 1})`).pipe(
      Effect.retry(Schedule.exponential("50 millis").pipe(
        Schedule.either(Schedule.spaced("1 second")),
        Schedule.jittered,
        Schedule.upTo("2 minutes")
      )),
      Effect.asVoid
    ), { schema: Event, orderBy: "subject", concurrency: 16, group: "chaos" })
})

Effect.runPromise(
  program.pipe(Effect.provide(services), Logger.withMinimumLogLevel(LogLevel.Warning))
).catch((error) => {
  process.stderr.write(`consumer ended: ${String(error)}\n`)
  process.exit(1)
})
