/**
 * The `bulwark` command line: the root command, its runner and the exit-code convention shared by every
 * subcommand (0 success, 1 a negative answer such as "invalid" or "invariant violated", 2 bad usage).
 */
import { Command, ValidationError } from "@effect/cli"
import { Console, Data, Effect } from "effect"
import { subcommands } from "./Commands.js"

/** The version printed by `bulwark --version`. */
export const version = "0.1.0"

/**
 * A command's deliberate non-zero ending: the message is printed to stderr without a stack trace and the
 * process exits with `code`. Capability packages may define an error of the same shape (`_tag: "CliExit"`,
 * `code`, `message`) instead of importing this one, so they need not depend on the CLI package.
 */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly code: 1 | 2
  readonly message: string
}> {}

const isCliExit = (u: unknown): u is { readonly code: 1 | 2; readonly message: string } =>
  typeof u === "object" && u !== null && (u as { _tag?: unknown })._tag === "CliExit" &&
  ((u as { code?: unknown }).code === 1 || (u as { code?: unknown }).code === 2)

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

/**
 * Runs the CLI over `argv` (as `process.argv`) and answers the process exit code: bad usage is 2,
 * a {@link CliExit} its own code, any other failure 1 with its message.
 */
export const run = (argv: ReadonlyArray<string>) =>
  cli(argv).pipe(
    Effect.as(0),
    Effect.catchAll((error: unknown) => {
      if (ValidationError.isValidationError(error)) return Effect.succeed(2)
      if (isCliExit(error)) return Effect.as(Console.error(error.message), error.code)
      const message = error instanceof Error ? error.message : String(error)
      return Effect.as(Console.error(`bulwark: ${message}`), 1)
    })
  )
