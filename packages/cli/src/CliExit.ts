/**
 * The CLI's deliberate non-zero ending, in a module of its own so that the transports and subcommands can
 * use it without importing the root command (which imports them).
 */
import { Data } from "effect"

/**
 * A command's deliberate non-zero ending: the message is printed to stderr without a stack trace and the
 * process exits with `code`. Capability packages may define an error of the same shape (`_tag: "CliExit"`,
 * `code`, `message`) instead of importing this one, so they need not depend on the CLI package.
 */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly code: 1 | 2
  readonly message: string
}> {}

/** Whether `u` has the shape of a {@link CliExit}, from this package or a capability package. */
export const isCliExit = (u: unknown): u is { readonly code: 1 | 2; readonly message: string } =>
  typeof u === "object" && u !== null && (u as { _tag?: unknown })._tag === "CliExit" &&
  ((u as { code?: unknown }).code === 1 || (u as { code?: unknown }).code === 2)
