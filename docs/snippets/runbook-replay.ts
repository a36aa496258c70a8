import { Replay } from "@bulwark/dead-letter"
import * as DlqCli from "@bulwark/dead-letter/Cli"
import { PostgresTransport } from "@bulwark/transport-postgres"
import { Command } from "@effect/cli"

/**
 * The stock `bulwark dlq replay` publishes through the transport `BULWARK_TRANSPORT` names. An application
 * can build the same `dlq` command with its own publisher and ship it in its own binary. The publisher
 * may use the store's database: the command provides one `Database` to both (never two PGlite instances
 * on one data directory).
 */
const publisher = PostgresTransport.layerConfig()

export const dlq = DlqCli.make({ publisher })

export const cli = Command.run(dlq, { name: "shop-dlq", version: "1.0.0" })

/** The same from code: one category of one topic, 2 per second; the first batch is a canary. */
export const canary = Replay.replay({ filter: { category: "dependency", originTopic: "shipments", limit: 10 }, rate: 2 })
export const rest = Replay.replay({ filter: { category: "dependency", originTopic: "shipments" }, rate: 2 })
