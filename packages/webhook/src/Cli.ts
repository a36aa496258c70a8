/**
 * `bulwark webhook sign|verify`: sign a body read on stdin, or verify one, from the command line.
 *
 * Exit codes: 0 and `valid` when a request verifies; 1 and the typed reason (`NoMatchingSignature: …`)
 * when it does not; 2 on bad usage. Several `--secret` flags form a keyring (any active secret verifies;
 * signing signs with each).
 */
import { Command, Options } from "@effect/cli"
import { Console, Data, Effect, Option } from "effect"
import * as Signing from "./Signing.js"
import * as Verifier from "./Verifier.js"

/** A deliberate exit with a code (the CLI runner prints the message and exits with it). */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly code: 1 | 2
  readonly message: string
}> {}

const readStdin: Effect.Effect<Uint8Array> = Effect.promise(async () => {
  const chunks: Array<Buffer> = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return new Uint8Array(Buffer.concat(chunks))
})

const secret = Options.text("secret").pipe(
  Options.repeated,
  Options.withDescription("A secret (whsec_…, whsk_… or whpk_… for standard; the raw secret for stripe/github). Repeat for a keyring.")
)
const scheme = Options.choice("scheme", Verifier.schemes).pipe(
  Options.withDefault("standard" as Verifier.Scheme),
  Options.withDescription("The signature scheme.")
)
const id = Options.text("id").pipe(Options.optional, Options.withDescription("The webhook id (webhook-id; X-GitHub-Delivery, optional for github)."))
const timestamp = Options.integer("timestamp").pipe(Options.optional, Options.withDescription("The signed timestamp, unix seconds."))

const usage = (message: string) => new CliExit({ code: 2, message: `bulwark webhook: ${message}` })

const sign = Command.make("sign", { secret, scheme, id, timestamp }, (args) =>
  Effect.gen(function*() {
    if (args.secret.length === 0) return yield* usage("at least one --secret is required")
    const body = yield* readStdin
    switch (args.scheme) {
      case "standard": {
        const headers = yield* Signing.standard(args.secret, {
          body,
          ...Option.match(args.id, { onNone: () => ({}), onSome: (id) => ({ id }) }),
          ...Option.match(args.timestamp, { onNone: () => ({}), onSome: (timestamp) => ({ timestamp }) })
        }).pipe(Effect.mapError((error) => usage(`${error._tag}: ${error.message}`)))
        for (const [name, value] of Object.entries(headers)) yield* Console.log(`${name}: ${value}`)
        return
      }
      case "stripe":
        return yield* Console.log(`stripe-signature: ${yield* Signing.stripe(args.secret, body, Option.getOrUndefined(args.timestamp))}`)
      case "github":
        return yield* Console.log(`x-hub-signature-256: ${Signing.github(args.secret[0]!, body)}`)
    }
  })).pipe(Command.withDescription("Sign the body read on stdin and print the headers."))

const signatureHeaderOf: Record<Verifier.Scheme, string> = {
  standard: "webhook-signature",
  stripe: "stripe-signature",
  github: "x-hub-signature-256"
}

/**
 * The request headers `verify` checks, from `--header` lines and the scheme-specific shorthands; a string is
 * a usage error.
 */
export const requestHeaders = (
  scheme: Verifier.Scheme,
  args: {
    readonly header: ReadonlyArray<string>
    readonly signature?: string | undefined
    readonly id?: string | undefined
    readonly timestamp?: number | undefined
  }
): Record<string, string> | string => {
  const headers: Record<string, string> = {}
  for (const line of args.header) {
    const colon = line.indexOf(":")
    if (colon <= 0) return `--header must be "Name: value", got ${JSON.stringify(line)}`
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  if (args.signature !== undefined) headers[signatureHeaderOf[scheme]] = args.signature
  if (args.id !== undefined) headers[scheme === "github" ? "x-github-delivery" : "webhook-id"] = args.id
  if (args.timestamp !== undefined) headers["webhook-timestamp"] = String(args.timestamp)
  if (Object.keys(headers).length === 0) return "give --signature (with --id/--timestamp) or --header"
  return headers
}

const verify = Command.make("verify", {
  secret,
  scheme,
  id,
  timestamp,
  signature: Options.text("signature").pipe(Options.optional, Options.withDescription("The signature header's value.")),
  header: Options.text("header").pipe(Options.repeated, Options.withDescription("A request header, \"Name: value\" (repeatable).")),
  tolerance: Options.integer("tolerance").pipe(Options.withDefault(300), Options.withDescription("Allowed timestamp skew, seconds.")),
  now: Options.integer("now").pipe(Options.optional, Options.withDescription("Verify as if now were this unix time."))
}, (args) =>
  Effect.gen(function*() {
    if (args.secret.length === 0) return yield* usage("at least one --secret is required")
    if (args.tolerance < 0) return yield* usage("--tolerance must not be negative")
    const headers = requestHeaders(args.scheme, {
      header: args.header,
      signature: Option.getOrUndefined(args.signature),
      id: Option.getOrUndefined(args.id),
      timestamp: Option.getOrUndefined(args.timestamp)
    })
    if (typeof headers === "string") return yield* usage(headers)
    const body = yield* readStdin
    const nowMillis = Option.isSome(args.now) ? args.now.value * 1000 : Date.now()
    const result = Verifier.check(args.scheme, "cli", args.secret, { headers, body }, nowMillis, args.tolerance)
    if ("_tag" in result) return yield* new CliExit({ code: 1, message: `${result._tag}: ${result.message}` })
    yield* Console.log("valid")
  })).pipe(Command.withDescription("Verify the body read on stdin; exit 0 and print `valid`, or exit 1 with the reason."))

// Typed by a plain `string` name so it fits the CLI's list of subcommands (`Command<string, …>`).
const name: string = "webhook"

/** `bulwark webhook`. */
export const command = Command.make(name).pipe(
  Command.withDescription("Sign and verify webhooks (Standard Webhooks, Stripe, GitHub)."),
  Command.withSubcommands([sign, verify])
)
