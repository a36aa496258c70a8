/**
 * The subcommands of `bulwark`. Each capability package defines its own command (in its `src/Cli.ts`)
 * and is registered here.
 */
import { Command } from "@effect/cli"
import { command as webhook } from "@bulwark/webhook/Cli"
import * as HistoryCli from "@bulwark/audit/Cli"
import { command as contracts } from "@bulwark/contracts/Cli"
import * as DeadLetterCli from "@bulwark/dead-letter/Cli"
import { command as outbox } from "@bulwark/outbox/Cli"
import { command as simulate } from "@bulwark/simulator/Cli"
import { publisherFromEnv } from "./Transports.js"

// `dlq replay` publishes through the transport BULWARK_TRANSPORT names (see Transports.ts).
const dlq = DeadLetterCli.make({ publisher: publisherFromEnv })
// `history replay` likewise.
const history = HistoryCli.make({ publisher: publisherFromEnv })

/** Every registered subcommand. */
export const subcommands: ReadonlyArray<Command.Command<string, any, any, any>> = [webhook, dlq, outbox, history, simulate, contracts]
