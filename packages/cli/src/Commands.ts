/**
 * The subcommands of `bulwark`. Each capability package defines its own command (in its `src/Cli.ts`)
 * and is registered here.
 */
import { Command } from "@effect/cli"

/** Every registered subcommand. */
export const subcommands: ReadonlyArray<Command.Command<string, any, any, any>> = []
