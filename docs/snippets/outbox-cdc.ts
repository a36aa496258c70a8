import { Outbox, Relay } from "@bulwark/outbox"
import * as CdcRelay from "@bulwark/outbox/CdcRelay"
import { Database } from "@bulwark/sql"
import { Memory } from "@bulwark/transport"
import { Effect, Layer } from "effect"

const url = "postgres://outbox_relay@db.internal:5432/app"

/**
 * The CDC relay instead of the polling relay (never both on one table): it streams the outbox table's
 * committed inserts from its slot and deletes each row once the transport confirmed it. Appends are
 * unchanged: `Outbox.layer` still owns the table (its migrations) and `Outbox.append`.
 */
const RelayLive = CdcRelay.layerMonitored({ connection: url, name: "orders", batchSize: 1000 }).pipe(
  Layer.provide(Memory.layer())
)
const OutboxLive = Outbox.layer().pipe(Layer.provide(Database.layerPostgres({ url })))

/** The rest of the application (an HTTP server, consumers, ...), running until interrupted. */
declare const serve: Effect.Effect<never>

/** `Relay.guard` works for either relay: the program fails with `RelayFailed` if the relay gives up. */
export const main = Relay.guard(serve).pipe(Effect.provide(Layer.merge(RelayLive, OutboxLive)))
