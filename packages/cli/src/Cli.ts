/**
 * The `bulwark` command line: the root command, its runner and the exit-code convention shared by every
 * subcommand (0 success, 1 a negative answer such as "invalid" or "invariant violated", 2 bad usage).
 */
import { Command, ValidationError } from "@effect/cli"
import { Console, Effect } from "effect"
import { createRequire } from "node:module"
import { isCliExit } from "./CliExit.js"
import { subcommands } from "./Commands.js"

export { CliExit } from "./CliExit.js"

/** The version printed by `bulwark --version`: this package's own (the same file from src/ and dist/). */
export const version: string = (createRequire(import.meta.url)("../package.json") as { version: string }).version

const root = Command.make("bulwark", {}, () =>
  Console.log([
    "bulwark — reliable event-driven integrations on Effect",
    "",
    "Run `bulwark --help` for the commands."
  ].join("\n"))).pipe(
    Command.withDescription("Bulwark: webhooks, idempotency, retries, breakers, outbox, DLQ and the simulator")
  )

/** The root command with every registered subcommand. */
export const command: Command.Command<"bulwark", any, any, any> = subcommands.length === 0
  ? root
  : root.pipe(Command.withSubcommands(subcommands as [Command.Command<string, any, any, any>, ...Array<Command.Command<string, any, any, any>>]))

const cli = Command.run(command, { name: "bulwark", version })

/** The names (and aliases) of every registered subcommand. */
export const commandNames: ReadonlyArray<string> = subcommands.flatMap((c) => Array.from(Command.getNames(c)))

// Built-in options of the root command that take a value.
const rootOptionsWithValue = new Set(["--completions", "--log-level"])

/**
 * The first word of `args` (as `process.argv.slice(2)`) that is not a registered subcommand, if any. Without
 * this check `bulwark journal --help` (no such command) prints the top-level help and exits 0.
 */
export const unknownCommand = (args: ReadonlyArray<string>): string | undefined => {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (arg === "--") return undefined
    if (arg.startsWith("-")) {
      if (rootOptionsWithValue.has(arg)) i++
      continue
    }
    return commandNames.includes(arg) ? undefined : arg
  }
  return undefined
}

/**
 * Runs the CLI over `argv` (as `process.argv`) and answers the process exit code: bad usage (an unknown
 * subcommand included) is 2, a {@link CliExit} its own code, any other failure 1 with its message.
 */
export const run = (argv: ReadonlyArray<string>) => {
  const unknown = unknownCommand(argv.slice(2))
  if (unknown !== undefined) {
    return Effect.as(
      Console.error(`bulwark: unknown command ${JSON.stringify(unknown)}; the commands are ${commandNames.join(", ")}. ` +
        "Run `bulwark --help` for usage."),
      2
    )
  }
  return cli(argv).pipe(
    Effect.as(0),
    Effect.catchAll((error: unknown) => {
      if (ValidationError.isValidationError(error)) return Effect.succeed(2)
      if (isCliExit(error)) return Effect.as(Console.error(error.message), error.code)
      const message = error instanceof Error ? error.message : String(error)
      return Effect.as(Console.error(`bulwark: ${message}`), 1)
    })
  )
}
