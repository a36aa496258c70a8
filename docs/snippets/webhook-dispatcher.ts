import { Database } from "@bulwark/sql"
import { Dispatcher } from "@bulwark/webhook"
import * as SqlDispatchStore from "@bulwark/webhook/DispatchStore/Sql"
import { Effect, Layer } from "effect"

/** The durable dispatcher with one worker in this process, over the configured database. */
export const Webhooks = Dispatcher.layer({ workers: 1 }).pipe(
  Layer.provide(SqlDispatchStore.layer()),
  Layer.provide(Database.layerConfig())
)

/** Registers a partner's endpoint (once, or on every start: it is an upsert). */
export const register = Effect.flatMap(Dispatcher.Dispatcher, (d) =>
  d.registerEndpoint({ id: "partner-acme", url: "https://acme.example/hooks", secrets: ["whsec_c2VjcmV0LWZvci1hY21lLTAwMDAwMDAw"] }))

/** Stores one delivery (in the caller's transaction, if any) and returns: the worker sends it. */
export const notifyShipped = (orderId: string) =>
  Effect.flatMap(Dispatcher.Dispatcher, (d) =>
    d.send({ id: `order-${orderId}-shipped`, body: new TextEncoder().encode(JSON.stringify({ orderId })) }, ["partner-acme"]))
