import { Handler } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import { Memory, Transport } from "@bulwark/transport"
import { AmqpTransport } from "@bulwark/transport-amqp"
import { NatsTransport } from "@bulwark/transport-nats"
import { PostgresTransport } from "@bulwark/transport-postgres"
import { RedisTransport } from "@bulwark/transport-redis"
import { Effect, Layer, Schema } from "effect"

const OrderPaid = Schema.Struct({ orderId: Schema.String })

declare const handler: Handler.Handler<typeof OrderPaid.Type> // your handler and middleware

/** The consumer is written once against the ports; the transport is a layer chosen at the edge. */
export const consumer = Effect.gen(function*() {
  const subscriber = yield* Transport.Subscriber
  if (!subscriber.features.orderedPerKey) yield* Effect.logInfo("transport does not order per key; the pipeline orders by subject")
  return yield* Transport.consume("orders.paid", handler, {
    schema: OrderPaid,
    group: "fulfilment", // competing consumers share a group's work
    concurrency: 16,
    orderBy: "subject"
  })
})

export const InMemory = Memory.layer({ visibilityTimeout: "30 seconds" })
export const OnPostgres = PostgresTransport.layerConfig().pipe(Layer.provide(Database.layerConfig())) // BULWARK_QUEUE_*, BULWARK_DATABASE_URL
export const OnNats = NatsTransport.layerConfig() // BULWARK_NATS_URL, BULWARK_NATS_ACK_WAIT, …
export const OnRedis = RedisTransport.layerConfig({ visibilityTimeout: "30 seconds" }) // BULWARK_REDIS_URL
export const OnRabbit = AmqpTransport.layerConfig({ prefetch: 32 }) // BULWARK_AMQP_URL; prefetch ≥ concurrency

export const main = consumer.pipe(Effect.provide(OnNats))
