/**
 * `bulwark history show <event-id>` and `bulwark history replay --since … --to <topic>`, over the SQL audit
 * log of the database chosen by `BULWARK_DATABASE_URL` (a postgres:// URL) or, by default, the embedded
 * PGlite in `BULWARK_DATA_DIR`; `BULWARK_AUDIT_TABLE` names the table (default `bulwark_audit`). Neither
 * command creates a database that does not exist.
 *
 * `show` prints the whole timeline of one event: its own entries and those of the events it caused
 * (received → published → processed → the outbox event it caused → published by the relay → processed → sent,
 * or → dead-lettered → replayed). `replay` republishes the kept messages of a period to a topic through the
 * `Publisher` layer given to {@link make}, rate-limited, once per event, printing progress on stderr.
 *
 * Exit codes: 0 success; 1 nothing found, a failed publish or an unreachable database; 2 bad usage.
 */
import { Args, Command, Options } from "@effect/cli"
import { AuditLog as Port } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import type { Transport } from "@bulwark/transport"
import type * as SqlClient from "@effect/sql/SqlClient"
import { Config, Console, Data, Effect, Layer, Option } from "effect"
import { renderEntry } from "./AuditLog.js"
import * as Sql from "./AuditLog/Sql.js"
import * as History from "./History.js"

/** A deliberate exit with a code (the CLI runner prints the message and exits with it). */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly code: 1 | 2
  readonly message: string
}> {}

const usage = (message: string) => new CliExit({ code: 2, message: `bulwark history: ${message}` })

/** What `replay` publishes through, or why there is none. */
export type PublisherSource =
  | Layer.Layer<Transport.Publisher, unknown, SqlClient.SqlClient | Database.Database>
  | { readonly unavailable: string }

const noTransport = {
  unavailable: "replay needs a transport to publish to, and this command has none wired in; build one with " +
    "`Cli.make({ publisher })` from @bulwark/audit. Nothing was replayed."
}

const units: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** A point in time: an ISO 8601 timestamp, or a duration ago (`90m`, `12h`, `7d`). */
export const parseSince = (text: string, now: number): number | undefined => {
  const ago = /^(\d+)([smhd])$/.exec(text.trim())
  if (ago !== null) return now - Number(ago[1]) * units[ago[2]!]!
  if (!/^\d{4}-\d{2}-\d{2}/.test(text.trim())) return undefined
  const at = Date.parse(text)
  return Number.isNaN(at) ? undefined : at
}

const auditTable = Config.withDefault(Config.string("BULWARK_AUDIT_TABLE"), Sql.defaultTable)

// Opens the configured database (never creating an embedded one), the audit log and `extra` over it.
const withLog = <A, E, R, X = never>(
  effect: Effect.Effect<A, E, R>,
  extra?: Layer.Layer<X, unknown, SqlClient.SqlClient | Database.Database>
): Effect.Effect<A, unknown, Exclude<R, Port.AuditLog | X>> =>
  Effect.gen(function*() {
    const { description, layer: database } = yield* Database.existingConfig.pipe(
      Effect.mapError((error) => usage(error.message))
    )
    const table = yield* auditTable.pipe(Effect.mapError((error) => usage(String(error))))
    yield* Console.error(`audit log: ${description} (table ${table})`)
    const log = Sql.layer({ table })
    const services = extra === undefined ? log : Layer.merge(log, extra)
    return yield* (Effect.provide(effect, services.pipe(Layer.provide(database))) as Effect.Effect<A, unknown, Exclude<R, Port.AuditLog | X>>).pipe(
      Effect.catchIf(
        (error: unknown) => (error as { _tag?: string })._tag === "SqlError",
        (error) => Effect.fail(new CliExit({ code: 1, message: `bulwark history: cannot use the audit database: ${String((error as Error).message)}` }))
      )
    )
  })

const json = Options.boolean("json").pipe(Options.withDescription("Machine-readable JSON output."))

const show = Command.make("show", { id: Args.text({ name: "event-id" }), json }, (args) =>
  withLog(Effect.gen(function*() {
    const story = yield* Port.story(args.id)
    if (story.length === 0) return yield* new CliExit({ code: 1, message: `bulwark history: no audit entries for event ${args.id}` })
    if (args.json) {
      yield* Console.log(JSON.stringify(story.map(({ message: _, ...entry }) => entry), null, 2))
      return
    }
    yield* Console.log(`event ${args.id}: ${story.length} entries`)
    for (const entry of story) yield* Console.log(renderEntry(entry, args.id))
  }))).pipe(Command.withDescription("The whole timeline of one event: ingress, queue, handlers, outbox, DLQ, sender."))

const replayCommand = (publisher: PublisherSource) =>
  Command.make("replay", {
    since: Options.text("since").pipe(Options.withDescription("From this time: ISO 8601, or a duration ago (90m, 12h, 7d).")),
    until: Options.text("until").pipe(Options.optional, Options.withDescription("Before this time (default: now).")),
    to: Options.text("to").pipe(Options.withDescription("The topic to publish to.")),
    fromTopic: Options.text("from-topic").pipe(Options.optional, Options.withDescription("Only messages first published to this topic.")),
    rate: Options.float("rate").pipe(Options.withDefault(100), Options.withDescription("Messages per second (default 100)."))
  }, (args) =>
    Effect.gen(function*() {
      const now = Date.now()
      const since = parseSince(args.since, now)
      if (since === undefined) return yield* usage(`--since ${JSON.stringify(args.since)} is neither an ISO time nor 90m/12h/7d`)
      const until = Option.map(args.until, (text) => parseSince(text, now))
      if (Option.isSome(until) && until.value === undefined) return yield* usage(`--until is neither an ISO time nor 90m/12h/7d`)
      if (!(args.rate > 0) || !Number.isFinite(args.rate)) return yield* usage("--rate must be a positive number")
      if (args.to.trim() === "") return yield* usage("--to must name a topic")
      if ("unavailable" in publisher) return yield* usage(publisher.unavailable)
      const progress = yield* withLog(
        History.replay({
          since,
          ...(Option.isSome(until) && until.value !== undefined ? { until: until.value } : {}),
          ...(Option.isSome(args.fromTopic) ? { topic: args.fromTopic.value } : {}),
          to: args.to,
          rate: args.rate,
          pageSize: 100,
          onProgress: (p) => Console.error(`  … read ${p.scanned}, published ${p.handled} (position ${p.position})`)
        }),
        publisher
      )
      yield* Console.log(
        `replayed ${progress.handled} events to ${args.to}; skipped ${progress.duplicates} repeated publishes and ` +
          `${progress.withoutMessage} entries whose message was not kept`
      )
    })).pipe(Command.withDescription("Republish the kept messages of a period to a topic, rate-limited, once per event."))

// Typed by a plain `string` name so it fits the CLI's list of subcommands.
const name: string = "history"

/** Builds the `history` command, replaying through `publisher`. */
export const make = (options: { readonly publisher: PublisherSource }) =>
  Command.make(name).pipe(
    Command.withDescription("The audit log: one event's timeline, and replay of a period to a topic."),
    Command.withSubcommands([show, replayCommand(options.publisher)])
  )

/** The `history` command without a transport: `replay` refuses (the `bulwark` binary builds its own with {@link make}). */
export const command = make({ publisher: noTransport })
