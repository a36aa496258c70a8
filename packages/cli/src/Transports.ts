/**
 * The transport the stock `bulwark` binary publishes through (today: `bulwark dlq replay`), chosen by
 * `BULWARK_TRANSPORT`:
 * - `postgres`: the queue table in the same database as the dead-letter store (`BULWARK_DATABASE_URL`, or the
 *   embedded PGlite in `BULWARK_DATA_DIR`), configured by `BULWARK_QUEUE_*`;
 * - `nats`: NATS JetStream (`BULWARK_NATS_URL`, `BULWARK_NATS_PREFIX`, …);
 * - `amqp`: RabbitMQ (`BULWARK_AMQP_URL`);
 * - `redis`: Redis Streams (`BULWARK_REDIS_URL`, `BULWARK_REDIS_KEY_PREFIX`).
 *
 * There is deliberately no default: replaying into a transport nobody consumes would mark entries replayed
 * while the messages sit unread.
 */
import type { Database } from "@bulwark/sql"
import type { Transport } from "@bulwark/transport"
import type * as SqlClient from "@effect/sql/SqlClient"
import { Config, type ConfigError, Effect, Layer, Option } from "effect"
import { CliExit } from "./CliExit.js"

/** The names `BULWARK_TRANSPORT` accepts. */
export const names = ["postgres", "nats", "amqp", "redis"] as const

const load = <M>(module: () => Promise<M>) =>
  Effect.tryPromise({
    try: module,
    catch: (cause) => new CliExit({ code: 1, message: `bulwark: the transport module could not be loaded: ${String(cause)}` })
  })

type PublisherLayer = Layer.Layer<Transport.Publisher, unknown, SqlClient.SqlClient | Database.Database>

/** The configured transport's `Publisher`; fails with a usage `CliExit` (2) when none or an unknown one is set. */
export const publisherFromEnv: PublisherLayer = Layer
  .unwrapEffect(
    Effect.gen(function*(): Effect.fn.Return<PublisherLayer, CliExit | ConfigError.ConfigError> {
      const configured = yield* Config.option(Config.string("BULWARK_TRANSPORT"))
      const name = Option.getOrElse(Option.map(configured, (value) => value.trim().toLowerCase()), () => "")
      switch (name) {
        // Loaded on demand: every `bulwark` start would otherwise pay for four broker clients.
        case "postgres":
          return (yield* load(() => import("@bulwark/transport-postgres/PostgresTransport"))).layerConfig()
        case "nats":
          return (yield* load(() => import("@bulwark/transport-nats/NatsTransport"))).layerConfig()
        case "amqp":
          return (yield* load(() => import("@bulwark/transport-amqp/AmqpTransport"))).layerConfig()
        case "redis":
          return (yield* load(() => import("@bulwark/transport-redis/RedisTransport"))).layerConfig()
        case "":
          return yield* new CliExit({
            code: 2,
            message: `bulwark: set BULWARK_TRANSPORT to one of ${names.join(", ")} to say where replayed messages go. ` +
              "Nothing was replayed."
          })
        default:
          return yield* new CliExit({
            code: 2,
            message: `bulwark: BULWARK_TRANSPORT=${JSON.stringify(name)} is not one of ${names.join(", ")}. Nothing was replayed.`
          })
      }
    })
  )
