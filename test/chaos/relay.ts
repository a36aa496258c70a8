/**
 * A chaos relay process: `Relay.run` publishing the outbox to NATS, as an application would run it, with no
 * supervisor of its own; it must ride out database and broker restarts by itself. The driver SIGKILLs it.
 */
import { Outbox, Relay } from "@bulwark/outbox"
import { Database } from "@bulwark/sql"
import { NatsTransport } from "@bulwark/transport-nats"
import { Effect, Layer, Logger, LogLevel } from "effect"
import { childConfig, outboxTable } from "./config.js"

const config = childConfig()
const services = Layer.mergeAll(
  Outbox.layer({ table: outboxTable, partitioned: config.partitioned === true }),
  NatsTransport.layer({ servers: config.natsUrl, prefix: config.prefix, reconnectTimeWait: "250 millis", requestTimeout: "3 seconds" })
).pipe(Layer.provideMerge(Database.layerPostgres({ url: config.pgUrl, maxConnections: 4, connectRetry: "2 minutes" })))

Effect.runPromise(
  Relay.run({ relayId: config.relayId ?? "chaos-relay", batchSize: 100, pollInterval: "250 millis" }).pipe(
    Effect.provide(services),
    Logger.withMinimumLogLevel(LogLevel.Warning)
  )
).catch((error) => {
  process.stderr.write(`relay ended: ${String(error)}\n`)
  process.exit(1)
})
