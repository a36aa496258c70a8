/**
 * The database and transport a run uses, chosen by the environment:
 *
 * - `BULWARK_DATABASE_URL` (a `postgres://` URL): PostgreSQL; else `BULWARK_DATA_DIR`: PGlite on disk; else
 *   PGlite in memory, so a demo run starts clean and leaves nothing behind.
 * - `BULWARK_TRANSPORT=nats` (with `NATS_URL`, default `127.0.0.1:4222`): NATS JetStream; else the memory
 *   transport.
 *
 * On anything shared (a server, a data directory) a run uses its own table prefix and stream prefix and
 * removes them afterwards, so runs never see each other's rows or messages.
 */
import { Database } from "@bulwark/sql"
import { Memory } from "@bulwark/transport"
import { NatsTransport } from "@bulwark/transport-nats"
import { Config, Data, Effect, Layer, Option } from "effect"
import { connect } from "nats"
import { randomBytes } from "node:crypto"

/** A unique, identifier-safe suffix for one run. */
export const runId = (): string => `${Date.now().toString(36)}${randomBytes(3).toString("hex")}`

/** NATS servers as the transport expects them (`host:port` gets the `nats://` scheme). */
export const natsServers = (value: string): string => value.includes("://") ? value : `nats://${value}`

/** Deleting a run's NATS streams failed. */
export class StreamCleanupError extends Data.TaggedError("StreamCleanupError")<{ readonly prefix: string; readonly cause: unknown }> {
  override get message(): string {
    return `could not delete the NATS streams of prefix ${this.prefix}: ${String(this.cause)}`
  }
}

/** Deletes every JetStream stream of `prefix` (the transport names them `<prefix>_…`). */
export const deleteStreams = (servers: string, prefix: string): Effect.Effect<number, StreamCleanupError> =>
  Effect.tryPromise({
    try: async () => {
      const nc = await connect({ servers, timeout: 5_000 })
      try {
        const jsm = await nc.jetstreamManager()
        const names: Array<string> = []
        for await (const name of jsm.streams.names()) if (name.startsWith(`${prefix}_`)) names.push(name)
        for (const name of names) await jsm.streams.delete(name)
        return names.length
      } finally {
        await nc.close()
      }
    },
    catch: (cause) => new StreamCleanupError({ prefix, cause })
  })

/** The NATS transport for one run: its own stream prefix, broker-side dedupe off (see the README). */
export const natsTransport = (servers: string, prefix: string) =>
  NatsTransport.layer({ servers, prefix, ackWait: "10 seconds", dedupeWindow: 0 })

/**
 * The memory transport, ordered per key like the pipelines expect. Its queues live in the heap, so a topic
 * holds at most 1 000 unsettled messages: beyond that the ingress waits before answering 202 (the providers'
 * requests slow down) instead of queueing every webhook a faster sender posts.
 */
export const memoryTransport = Memory.layer({ orderedPerKey: true, capacity: 1_000 })

/**
 * Reads the environment and answers the run's wiring: the layer, a description, the table prefix (fixed in
 * memory, unique per run on shared storage), whether to drop the tables and keep idempotency keys in the
 * database (`durable`), and the transport's clean-up (NATS streams).
 */
export const fromEnv = Effect.gen(function*() {
  const url = (yield* Config.option(Config.string("BULWARK_DATABASE_URL"))).pipe(Option.map((s) => s.trim()), Option.filter((s) => s !== ""))
  const dataDir = (yield* Config.option(Config.string("BULWARK_DATA_DIR"))).pipe(Option.filter((s) => s.trim() !== ""))
  const transport = (yield* Config.withDefault(Config.literal("memory", "nats")("BULWARK_TRANSPORT"), "memory"))
  const nats = natsServers(yield* Config.withDefault(Config.string("NATS_URL"), "127.0.0.1:4222"))
  const id = runId()
  const shared = Option.isSome(url) || Option.isSome(dataDir)
  const database = Option.isSome(url)
    ? { layer: Database.layerPostgres({ url: url.value }), setup: "PostgreSQL" }
    : Option.isSome(dataDir)
    ? { layer: Database.layerPglite({ dataDir: dataDir.value }), setup: `PGlite in ${dataDir.value}` }
    : { layer: Database.layerPglite(), setup: "PGlite in memory" }
  const streamPrefix = `payments-${id}`
  const wire = transport === "nats"
    ? { layer: natsTransport(nats, streamPrefix), setup: `NATS JetStream at ${nats}`, cleanUp: Effect.asVoid(deleteStreams(nats, streamPrefix)) }
    : { layer: memoryTransport, setup: "memory transport", cleanUp: Effect.void }
  return {
    layer: Layer.merge(database.layer, wire.layer),
    setup: `${database.setup}, ${wire.setup}`,
    tablePrefix: shared ? `payments_${id}` : "payments",
    dropTables: shared,
    durable: shared,
    cleanUp: wire.cleanUp
  }
})
