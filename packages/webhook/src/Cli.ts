/**
 * `bulwark webhook sign|verify`: sign a body read on stdin, or verify one, from the command line.
 * `bulwark webhook endpoints|deliveries|attempts|resend|recover|enable`: inspect and steer the durable
 * dispatcher's store (`BULWARK_DATABASE_URL`, else the embedded database in `BULWARK_DATA_DIR`, never created
 * by these commands; `BULWARK_WEBHOOK_TABLE` is the table prefix). They say which store on stderr first.
 * Resend and recover only make deliveries due again: the application's dispatcher workers send them.
 *
 * Exit codes: 0 and `valid` when a request verifies; 1 and the typed reason (`NoMatchingSignature: …`)
 * when it does not, or when the store cannot be used; 2 on bad usage. Several `--secret` flags form a
 * keyring (any active secret verifies; signing signs with each).
 */
import { Args, Command, Options } from "@effect/cli"
import { Database } from "@bulwark/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Config, ConfigError, Console, Data, DateTime, Effect, Option } from "effect"
import type { DeliveryState, DispatchStoreError, Service as DispatchStoreService } from "./DispatchStore.js"
import * as SqlDispatchStore from "./DispatchStore/Sql.js"
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

// --- the dispatcher's store --------------------------------------------------------------------------------

/** Runs `f` over the configured dispatch store, after saying which one; opening failures become exits. */
const withDispatchStore = <A>(f: (store: DispatchStoreService) => Effect.Effect<A, DispatchStoreError | CliExit>) =>
  Effect.gen(function*() {
    const table = yield* Config.withDefault(Config.string("BULWARK_WEBHOOK_TABLE"), SqlDispatchStore.defaultTable)
    const database = yield* Database.existingConfig
    yield* Console.error(`store: ${database.description} (tables ${table}_*)`)
    return yield* Effect.flatMap(SqlDispatchStore.make({ table }), f).pipe(Effect.provide(database.layer))
  }).pipe(
    Effect.catchIf(ConfigError.isConfigError, (error) => Effect.fail(usage(`bad configuration: ${String(error)}`))),
    Effect.catchTags({
      DatabaseUrlError: (error) => Effect.fail(usage(error.message)),
      InvalidTableName: (error) => Effect.fail(usage(error.message)),
      NoEmbeddedDatabase: (error) => Effect.fail(new CliExit({ code: 1, message: `bulwark webhook: ${error.message}` })),
      SqlError: (error: SqlError) =>
        Effect.fail(new CliExit({ code: 1, message: `bulwark webhook: cannot use the dispatch database: ${error.message}${error.cause instanceof Error ? `: ${error.cause.message}` : ""}` })),
      DispatchStoreError: (error) => Effect.fail(new CliExit({ code: 1, message: `bulwark webhook: ${error.message}` }))
    })
  )

const iso = (millis: number | undefined) => millis === undefined ? "-" : new Date(millis).toISOString()
const endpointOption = Options.text("endpoint").pipe(Options.withDescription("An endpoint id."))
const limit = Options.integer("limit").pipe(Options.withDefault(100), Options.withDescription("At most this many rows (1–10000)."))
const checkedLimit = (n: number) => n >= 1 && n <= 10_000 ? Effect.succeed(n) : Effect.fail(usage(`--limit must be 1..10000, got ${n}`))

const endpoints = Command.make("endpoints", {}, () =>
  withDispatchStore((store) =>
    Effect.flatMap(store.endpoints, (list) =>
      list.length === 0
        ? Console.log("no endpoints")
        : Effect.forEach(list, (e) =>
          Console.log(`${e.id}\t${e.disabled ? `disabled (${e.disabledReason ?? "no reason"})` : "enabled"}\t${e.url}` +
            (e.failingSince === undefined ? "" : `\tfailing since ${iso(e.failingSince)}`)), { discard: true })))
).pipe(Command.withDescription("List the registered endpoints and whether they are disabled."))

const deliveries = Command.make("deliveries", {
  endpoint: endpointOption.pipe(Options.optional),
  state: Options.choice("state", ["pending", "delivered", "failed"] as const).pipe(Options.optional, Options.withDescription("Only deliveries in this state.")),
  limit
}, (args) =>
  Effect.gen(function*() {
    const n = yield* checkedLimit(args.limit)
    return yield* withDispatchStore((store) =>
      Effect.flatMap(
        store.deliveries({
          limit: n,
          ...Option.match(args.endpoint, { onNone: () => ({}), onSome: (endpointId) => ({ endpointId }) }),
          ...Option.match(args.state, { onNone: () => ({}), onSome: (state: DeliveryState) => ({ state }) })
        }),
        (list) =>
          list.length === 0
            ? Console.log("no deliveries")
            : Effect.forEach(list, (d) =>
              Console.log(`${d.messageId}\t${d.endpointId}\t${d.state}${d.failReason === undefined ? "" : ` (${d.failReason})`}\t` +
                `attempts ${d.attempts}\t${d.state === "pending" ? `due ${iso(d.dueAt)}` : `updated ${iso(d.updatedAt)}`}`), { discard: true })
      ))
  })).pipe(Command.withDescription("List deliveries, oldest first."))

const attempts = Command.make("attempts", { message: Args.text({ name: "message-id" }) }, (args) =>
  withDispatchStore((store) =>
    Effect.flatMap(store.attempts(args.message), (list) =>
      list.length === 0
        ? Effect.fail(new CliExit({ code: 1, message: `bulwark webhook: no attempts recorded for ${args.message}` }))
        : Effect.forEach(list, (a) =>
          Console.log(`${a.endpointId}\t#${a.attempt}\t${iso(a.at)}\t${a.outcome}${a.status === undefined ? "" : ` ${a.status}`}\t` +
            `${a.latencyMillis} ms\t${a.excerpt.replace(/\s+/g, " ").slice(0, 120)}`), { discard: true })))
).pipe(Command.withDescription("Every recorded attempt of a message: endpoint, number, time, outcome, latency, answer."))

const resend = Command.make("resend", { message: Args.text({ name: "message-id" }), endpoint: endpointOption.pipe(Options.optional) }, (args) =>
  withDispatchStore((store) =>
    Effect.gen(function*() {
      const now = yield* DateTime.now
      const n = yield* store.requeue({
        messageId: args.message,
        includeDelivered: true,
        ...Option.match(args.endpoint, { onNone: () => ({}), onSome: (endpointId) => ({ endpointId }) })
      }, DateTime.toEpochMillis(now))
      if (n === 0) return yield* new CliExit({ code: 1, message: `bulwark webhook: nothing to resend for ${args.message} (unknown, or still pending)` })
      yield* Console.log(`${n} deliver${n === 1 ? "y" : "ies"} due again`)
    }))
).pipe(Command.withDescription("Send a message again (delivered or failed) to one endpoint or all it went to."))

const recover = Command.make("recover", {
  endpoint: endpointOption,
  since: Options.text("since").pipe(Options.withDescription("An ISO date: failed deliveries created since then are retried."))
}, (args) =>
  Effect.gen(function*() {
    const since = Date.parse(args.since)
    if (Number.isNaN(since)) return yield* usage(`--since must be an ISO date, got ${JSON.stringify(args.since)}`)
    return yield* withDispatchStore((store) =>
      Effect.gen(function*() {
        const n = yield* store.requeue({ endpointId: args.endpoint, since, state: "failed" }, DateTime.toEpochMillis(yield* DateTime.now))
        yield* Console.log(`${n} failed deliver${n === 1 ? "y" : "ies"} to ${args.endpoint} due again`)
      }))
  })).pipe(Command.withDescription("Retry an endpoint's failed deliveries created since a date."))

const enable = Command.make("enable", { endpoint: Args.text({ name: "endpoint-id" }) }, (args) =>
  withDispatchStore((store) =>
    Effect.gen(function*() {
      if (Option.isNone(yield* store.endpoint(args.endpoint))) {
        return yield* new CliExit({ code: 1, message: `bulwark webhook: no endpoint ${args.endpoint}` })
      }
      yield* store.updateEndpoint(args.endpoint, { disabled: false, disabledReason: null, failingSince: null })
      yield* Console.log(`${args.endpoint} enabled (use recover to retry what failed while it was disabled)`)
    }))
).pipe(Command.withDescription("Re-enable a disabled endpoint."))

// Typed by a plain `string` name so it fits the CLI's list of subcommands (`Command<string, …>`).
const name: string = "webhook"

/** `bulwark webhook`. */
export const command = Command.make(name).pipe(
  Command.withDescription("Sign and verify webhooks; inspect and steer the durable dispatcher's deliveries."),
  Command.withSubcommands([sign, verify, endpoints, deliveries, attempts, resend, recover, enable])
)
