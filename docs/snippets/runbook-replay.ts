import { Replay } from "@bulwark/dead-letter"
import * as DlqCli from "@bulwark/dead-letter/Cli"
import { Database } from "@bulwark/sql"
import { PostgresTransport } from "@bulwark/transport-postgres"
import { Command } from "@effect/cli"
import { Layer } from "effect"

/**
 * The stock `bulwark dlq replay` refuses (exit 2): it has no transport to publish to. An application
 * builds the same `dlq` command with its own publisher and ships it in its own binary.
 */
const publisher = PostgresTransport.layerConfig.pipe(Layer.provide(Database.layerConfig))

export const dlq = DlqCli.make({ publisher })

export const cli = Command.run(dlq, { name: "shop-dlq", version: "1.0.0" })

/** The same from code: one category of one topic, 2 per second; the first batch is a canary. */
export const canary = Replay.replay({ filter: { category: "dependency", originTopic: "shipments", limit: 10 }, rate: 2 })
export const rest = Replay.replay({ filter: { category: "dependency", originTopic: "shipments" }, rate: 2 })
