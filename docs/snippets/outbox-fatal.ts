import { Outbox, Relay } from "@bulwark/outbox"
import { Database } from "@bulwark/sql"
import { Memory } from "@bulwark/transport"
import { Effect, Layer } from "effect"

/** The relay in the background, watched: `Relay.guard` hears when it gives up. */
const RelayLive = Relay.layerMonitored({ batchSize: 200 }).pipe(
  Layer.provide(Layer.mergeAll(Outbox.layer(), Memory.layer())),
  Layer.provide(Database.layerConfig())
)

/** The rest of the application (an HTTP server, consumers, ...), running until interrupted. */
declare const serve: Effect.Effect<never>

/** Fails with `RelayFailed` if the relay stops for good, so the process exits non-zero and is restarted. */
export const main = Relay.guard(serve).pipe(Effect.provide(RelayLive))
