/**
 * `bulwark dlq list | show <id> | groups | replay [--group F] | purge --older-than D`: triage of the SQL dead-letter store chosen
 * by `BULWARK_DATABASE_URL` (a postgres:// URL) or, by default, the embedded PGlite in `BULWARK_DATA_DIR`
 * (default `.bulwark/pglite`); `BULWARK_DLQ_TABLE` names the table (default `bulwark_dead_letters`).
 *
 * `replay` publishes through the `Publisher` layer given to {@link make}; that layer may use the store's own
 * database (one connection, one embedded PGlite), so a Postgres queue-table transport replays into the same
 * database. Without a publisher, `replay` refuses with exit code 2 and says so rather than pretending.
 *
 * Every command that opens the store says which one first, on stderr (`store: PGlite at /abs/dir (table …)` or
 * `store: postgres://user:***@host/db (table …)`). None of them creates an embedded database that does not
 * exist yet — that would report an empty queue for a store nobody writes to — unless
 * `BULWARK_DLQ_CREATE_STORE=true` says to. Every option is validated before anything is opened.
 *
 * Exit codes: 0 success; 1 not found, a failed replay or an unreachable database; 2 bad usage, a bad URL, a
 * bad option value or a missing embedded store.
 */
import { Args, Command, Options } from "@effect/cli"
import { Failure } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import { Config, ConfigError, Console, Data, DateTime, Duration, Effect, Layer, Option, Schema } from "effect"
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { existsSync } from "node:fs"
import { join, resolve } from "node:path"
import * as Store from "./DeadLetterStore.js"
import * as Sql from "./DeadLetterStore/Sql.js"
import * as Replay from "./Replay.js"

/** A deliberate exit with a code (the CLI runner prints the message and exits with it). */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly code: 1 | 2
  readonly message: string
}> {}

const sqlStoreLayer = Layer.unwrapEffect(
  Effect.map(
    Config.withDefault(Config.string("BULWARK_DLQ_TABLE"), Sql.defaultTable),
    (table) => Sql.layer({ table })
  )
)

/** The SQL store chosen by configuration (`BULWARK_DATABASE_URL` / `BULWARK_DATA_DIR`, `BULWARK_DLQ_TABLE`). */
export const storeLayerConfig = sqlStoreLayer.pipe(Layer.provide(Database.layerConfig()))

/** Columns padded to their widest cell, two spaces apart. */
const renderTable = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()
  return [line(header), ...rows.map(line)].join("\n")
}

const usage = (message: string) => new CliExit({ code: 2, message: `bulwark dlq: ${message}` })

/** Whether a directory holds an embedded database already (PGlite writes `PG_VERSION` when it creates one). */
const embeddedStoreExists = (dataDir: string): boolean => existsSync(join(dataDir, "PG_VERSION"))

/**
 * The database the commands use, as configured, after saying which one on stderr. An embedded database
 * that does not exist is not created (a typo in `BULWARK_DATA_DIR`, or the wrong current directory, would
 * otherwise report "no dead-letter entries" from a fresh, empty store) unless `BULWARK_DLQ_CREATE_STORE`
 * is true.
 */
const chooseDatabase: Effect.Effect<
  Layer.Layer<SqlClient.SqlClient | Database.Database, SqlError | Database.DatabaseUrlError>,
  CliExit | ConfigError.ConfigError | Database.DatabaseUrlError
> = Effect.gen(function*() {
  const table = yield* Config.withDefault(Config.string("BULWARK_DLQ_TABLE"), Sql.defaultTable)
  const url = Option.map(yield* Config.option(Config.string("BULWARK_DATABASE_URL")), (value) => value.trim())
  if (Option.isSome(url) && url.value !== "") {
    yield* Database.parseUrl(url.value)
    yield* Console.error(`store: ${Transport.redactUrl(url.value)} (table ${table})`)
    // An operator at a prompt: a server that is away is waited for briefly, not a service's 30 s.
    return Database.layerPostgres({ url: url.value, connectRetry: "3 seconds" })
  }
  const dataDir = yield* Config.withDefault(Config.string("BULWARK_DATA_DIR"), Database.defaultDataDir)
  const shown = resolve(dataDir)
  if (!embeddedStoreExists(dataDir)) {
    const create = yield* Config.withDefault(Config.boolean("BULWARK_DLQ_CREATE_STORE"), false)
    if (!create) {
      return yield* usage(
        `no dead-letter store at ${shown}: there is no embedded database there, and this command does not create ` +
          "one (it would only report an empty queue). Point BULWARK_DATABASE_URL at your Postgres or BULWARK_DATA_DIR " +
          "at the application's data directory; set BULWARK_DLQ_CREATE_STORE=true to create an empty store there."
      )
    }
    yield* Console.error(`store: PGlite at ${shown} (table ${table}; new, created because BULWARK_DLQ_CREATE_STORE is set)`)
  } else yield* Console.error(`store: PGlite at ${shown} (table ${table})`)
  return Database.layerPglite({ dataDir })
})

// Opening the store is where a bad URL (usage, 2) or an unreachable database (1) shows up.
const withStore = <A, E, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E | CliExit, Exclude<R, Store.DeadLetterStore>> =>
  explainOpenFailures<A, E, Exclude<R, Store.DeadLetterStore>>(
    Effect.flatMap(chooseDatabase, (database) => Effect.provide(effect, sqlStoreLayer.pipe(Layer.provide(database))))
  )

// Store and publisher are built over one database layer: two PGlite instances on one data directory would
// corrupt it.
const withStoreAndPublisher = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  publisher: Layer.Layer<Transport.Publisher, unknown, SqlClient.SqlClient | Database.Database>
): Effect.Effect<A, unknown, Exclude<R, Store.DeadLetterStore | Transport.Publisher>> =>
  explainOpenFailures(
    Effect.flatMap(chooseDatabase, (database) =>
      Effect.provide(effect, Layer.merge(sqlStoreLayer, publisher).pipe(Layer.provide(database))))
  )

// `E` is what the wrapped command fails with; what opening the store adds is turned into a `CliExit`.
const explainOpenFailures = <A, E, R>(effect: Effect.Effect<A, unknown, R>): Effect.Effect<A, E | CliExit, R> =>
  effect.pipe(
    Effect.catchAll((error): Effect.Effect<never, E | CliExit> => {
      if (ConfigError.isConfigError(error)) return Effect.fail(usage(`bad configuration: ${String(error)}`))
      const tag = (error as { readonly _tag?: string })._tag
      if (tag === "CliExit") return Effect.fail(error as CliExit)
      if (tag === "DatabaseUrlError" || tag === "InvalidTableName") {
        return Effect.fail(usage((error as { readonly message: string }).message))
      }
      if (tag === "SqlError") {
        return Effect.fail(
          new CliExit({ code: 1, message: `bulwark dlq: cannot use the dead-letter database: ${errorText(error as SqlError)}` })
        )
      }
      return Effect.fail(error as E)
    })
  )

const errorText = (error: { readonly message: string; readonly cause?: unknown }): string => {
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : ""
  return `${error.message}${cause}`
}

const units: Record<string, number> = {
  ms: 1, millis: 1, s: 1000, sec: 1000, second: 1000, seconds: 1000, m: 60_000, min: 60_000, minute: 60_000,
  minutes: 60_000, h: 3_600_000, hour: 3_600_000, hours: 3_600_000, d: 86_400_000, day: 86_400_000,
  days: 86_400_000, w: 604_800_000, week: 604_800_000, weeks: 604_800_000
}

/** Parses `30d`, `12h`, `90 minutes`, `1.5 hours`… */
export const parseDuration = (text: string): Option.Option<Duration.Duration> => {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$/i.exec(text)
  const unit = match ? units[match[2]!.toLowerCase()] : undefined
  return match && unit !== undefined ? Option.some(Duration.millis(Number(match[1]) * unit)) : Option.none()
}

/** The longest `--older-than`: a century is already "everything"; beyond it dates leave the calendar. */
const maxAge = Duration.days(36_525)
/** `--rate` bounds, messages per second: below one per 100 s a replay never visibly progresses. */
const minRate = 0.01
const maxRate = 10_000
/** The longest id, type or topic accepted on the command line. */
const maxTextLength = 1024

// A NUL or other control character cannot be stored by Postgres (a raw SQL error) and is never in a real
// id, type or topic: refuse it with a usage error instead.
const controlCharacter = /[\u0000-\u001f\u007f]/

/** Checks a text option (an id, type or topic): the reason it is unusable, if it is. */
export const textProblem = (name: string, value: string): string | undefined => {
  if (value.trim() === "") return `${name} must not be empty`
  if (value.length > maxTextLength) return `${name} is longer than ${maxTextLength} characters`
  if (controlCharacter.test(value)) return `${name} ${JSON.stringify(value)} contains a control character`
  return undefined
}

/** Checks `--limit`: the reason it is unusable, if it is. */
export const limitProblem = (limit: number): string | undefined =>
  Number.isSafeInteger(limit) && limit >= 1 ? undefined : `--limit must be a whole number of at least 1, got ${limit}`

/** Checks `--group`: the reason it is unusable, if it is (a fingerprint is 16 hex digits, as `groups` prints). */
export const groupProblem = (group: string): string | undefined =>
  /^[0-9a-f]{16}$/.test(group)
    ? undefined
    : `--group must be a failure group's fingerprint (16 hex digits, as \`bulwark dlq groups\` prints), got ${JSON.stringify(group.slice(0, 64))}`

/** Checks `--rate`: the reason it is unusable, if it is. */
export const rateProblem = (rate: number): string | undefined =>
  Number.isFinite(rate) && rate >= minRate && rate <= maxRate
    ? undefined
    : `--rate must be a number of messages per second from ${minRate} to ${maxRate}, got ${rate}`

/** Parses and checks `--older-than`: the age, or the reason it is unusable. */
export const parseAge = (text: string): Duration.Duration | string => {
  const age = parseDuration(text)
  if (Option.isNone(age) || !Duration.isFinite(age.value)) {
    return `--older-than "${text}" is not a duration (e.g. 30d, 12h, 90m)`
  }
  if (Duration.greaterThan(age.value, maxAge)) return `--older-than "${text}" is longer than 100 years`
  return age.value
}

// The first problem among the text options given, as a usage error.
const checkTexts = (entries: ReadonlyArray<readonly [string, Option.Option<string> | ReadonlyArray<string>]>) =>
  Effect.forEach(entries, ([name, value]) => {
    const values = Option.isOption(value) ? Option.toArray(value) : value
    const problem = values.map((v) => textProblem(name, v)).find((p) => p !== undefined)
    return problem === undefined ? Effect.void : Effect.fail(usage(problem))
  }, { discard: true })

const category = Options.choice("category", Failure.categories).pipe(
  Options.optional,
  Options.withDescription("Only this category (schema, auth, timeout, dependency, unknown).")
)
const type = Options.text("type").pipe(Options.optional, Options.withDescription("Only this envelope type."))
const topic = Options.text("topic").pipe(Options.optional, Options.withDescription("Only this origin topic."))
const json = Options.boolean("json").pipe(Options.withDescription("Machine-readable JSON output."))

const filterOf = (args: {
  readonly category: Option.Option<Failure.Category>
  readonly type: Option.Option<string>
  readonly topic: Option.Option<string>
}): Store.Filter => ({
  ...Option.match(args.category, { onNone: () => ({}), onSome: (category) => ({ category }) }),
  ...Option.match(args.type, { onNone: () => ({}), onSome: (type) => ({ type }) }),
  ...Option.match(args.topic, { onNone: () => ({}), onSome: (originTopic) => ({ originTopic }) })
})

const encodeEntry = Schema.encodeSync(Store.DeadLetterEntry)

const iso = (time: DateTime.Utc) => DateTime.formatIso(time).replace(/\.\d{3}Z$/, "Z")

const table = (entries: ReadonlyArray<Store.DeadLetterEntry>): string => {
  const header = ["ID", "CATEGORY", "TYPE", "TOPIC", "ATTEMPTS", "LAST FAILED", "STATUS", "ERROR"]
  const rows = entries.map((e) => [
    e.id,
    e.category,
    e.type ?? "-",
    e.originTopic,
    String(e.attempts),
    iso(e.lastFailedAt),
    e.replay,
    e.error.message.replace(/\s+/g, " ").slice(0, 50)
  ])
  return renderTable(header, rows)
}

const list = Command.make("list", {
  category,
  type,
  topic,
  status: Options.choice("status", Store.ReplayStatus.literals).pipe(
    Options.optional,
    Options.withDescription("Only entries in this replay status.")
  ),
  limit: Options.integer("limit").pipe(Options.optional, Options.withDescription("At most this many entries.")),
  json
}, (args) =>
  Effect.gen(function*() {
    yield* checkTexts([["--type", args.type], ["--topic", args.topic]])
    const limitError = Option.flatMap(args.limit, (limit) => Option.fromNullable(limitProblem(limit)))
    if (Option.isSome(limitError)) return yield* Effect.fail(usage(limitError.value))
    return yield* withStore(listEntries(args))
  })).pipe(Command.withDescription("List dead-letter entries, oldest first."))

const listEntries = (args: {
  readonly category: Option.Option<Failure.Category>
  readonly type: Option.Option<string>
  readonly topic: Option.Option<string>
  readonly status: Option.Option<Store.ReplayStatus>
  readonly limit: Option.Option<number>
  readonly json: boolean
}) =>
  Effect.gen(function*() {
    const store = yield* Store.DeadLetterStore
    const entries = yield* store.list({
      ...filterOf(args),
      ...Option.match(args.status, { onNone: () => ({}), onSome: (replay) => ({ replay }) }),
      ...Option.match(args.limit, { onNone: () => ({}), onSome: (limit) => ({ limit }) })
    })
    if (args.json) return yield* Console.log(JSON.stringify(entries.map((entry) => encodeEntry(entry)), null, 2))
    if (entries.length === 0) return yield* Console.log("no dead-letter entries")
    yield* Console.log(table(entries))
    yield* Console.log(`\n${entries.length} entr${entries.length === 1 ? "y" : "ies"}`)
  })

const payloadText = (payload: Uint8Array): string => {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(payload)
  } catch {
    return `(binary, base64) ${Buffer.from(payload).toString("base64")}`
  }
}

const show = Command.make("show", { id: Args.text({ name: "id" }), json }, (args) =>
  Effect.zipRight(checkTexts([["the id", [args.id]]]), withStore(Effect.gen(function*() {
    const store = yield* Store.DeadLetterStore
    const found = yield* store.get(args.id)
    if (Option.isNone(found)) {
      return yield* Effect.fail(new CliExit({ code: 1, message: `bulwark dlq: no entry with id ${args.id}` }))
    }
    const e = found.value
    // The JSON adds the contract version the message was written with (read from its payload).
    if (args.json) return yield* Console.log(JSON.stringify({ ...encodeEntry(e), dataschema: Store.dataschemaOf(e.payload) }, null, 2))
    yield* Console.log([
      `id:            ${e.id}`,
      `message id:    ${e.messageId}`,
      `origin topic:  ${e.originTopic}`,
      `key:           ${e.key}`,
      `type:          ${e.type ?? "-"}`,
      `schema:        ${Store.dataschemaOf(e.payload) ?? "-"}`,
      `category:      ${e.category}`,
      `attempts:      ${e.attempts}`,
      `first failed:  ${iso(e.firstFailedAt)}`,
      `last failed:   ${iso(e.lastFailedAt)}`,
      `replay:        ${e.replay}${e.replayedAt ? ` (last ${iso(e.replayedAt)}, ${e.replayCount}×)` : ""}`,
      `error:         ${e.error.tag} (${e.error.classification}${e.error.status !== undefined ? `, status ${e.error.status}` : ""})`,
      `               ${e.error.message}`,
      `headers:`,
      ...Object.entries(e.headers).map(([name, value]) => `  ${name}: ${value}`),
      `payload:`,
      payloadText(e.payload)
    ].join("\n"))
  })))).pipe(Command.withDescription("Show one entry: the message, its headers and the last error."))

const groupTable = (groups: ReadonlyArray<Store.FailureGroup>): string => {
  const header = ["GROUP", "COUNT", "TOPIC", "CATEGORY", "ERROR", "FIRST FAILED", "LAST FAILED", "SAMPLE"]
  const rows = groups.map((g) => [
    g.fingerprint,
    String(g.count),
    g.originTopic,
    g.category,
    `${g.errorTag}: ${g.template}`.slice(0, 60),
    iso(g.firstFailedAt),
    iso(g.lastFailedAt),
    g.sampleId
  ])
  return renderTable(header, rows)
}

const groups = Command.make("groups", {
  category,
  type,
  topic,
  status: Options.choice("status", Store.ReplayStatus.literals).pipe(
    Options.optional,
    Options.withDescription("Only entries in this replay status (default: not replayed yet).")
  ),
  limit: Options.integer("limit").pipe(Options.optional, Options.withDescription("At most this many groups.")),
  json
}, (args) =>
  Effect.gen(function*() {
    yield* checkTexts([["--type", args.type], ["--topic", args.topic]])
    const limitError = Option.flatMap(args.limit, (limit) => Option.fromNullable(limitProblem(limit)))
    if (Option.isSome(limitError)) return yield* Effect.fail(usage(limitError.value))
    return yield* withStore(Effect.gen(function*() {
      const store = yield* Store.DeadLetterStore
      const found = yield* store.groups({
        ...filterOf(args),
        ...Option.match(args.status, { onNone: () => ({}), onSome: (replay) => ({ replay }) }),
        ...Option.match(args.limit, { onNone: () => ({}), onSome: (limit) => ({ limit }) })
      })
      if (args.json) {
        return yield* Console.log(JSON.stringify(
          found.map((g) => ({ ...g, firstFailedAt: iso(g.firstFailedAt), lastFailedAt: iso(g.lastFailedAt) })),
          null,
          2
        ))
      }
      if (found.length === 0) return yield* Console.log("no failure groups")
      yield* Console.log(groupTable(found))
      yield* Console.log(`\n${found.length} group${found.length === 1 ? "" : "s"}; replay one with: bulwark dlq replay --group <GROUP>`)
    }))
  })).pipe(Command.withDescription("Failure groups: entries with the same error type, message template and topic, largest first."))

const purge = Command.make("purge", {
  olderThan: Options.text("older-than").pipe(Options.withDescription("Delete entries last failed longer ago than this (30d, 12h, 90m)."))
}, (args) =>
  Effect.gen(function*() {
    const age = parseAge(args.olderThan)
    if (typeof age === "string") return yield* Effect.fail(usage(age))
    yield* withStore(Effect.gen(function*() {
      const store = yield* Store.DeadLetterStore
      const cutoff = DateTime.subtractDuration(yield* DateTime.now, age)
      const purged = yield* store.purge(cutoff)
      yield* Console.log(`purged ${purged} entr${purged === 1 ? "y" : "ies"} last failed before ${iso(cutoff)}`)
    }))
  })).pipe(Command.withDescription("Delete entries older than a retention age."))

/**
 * What `replay` publishes through: a `Publisher` layer (it may use the store's `SqlClient` and `Database`), or
 * why there is none.
 */
export type PublisherSource =
  | Layer.Layer<Transport.Publisher, unknown, SqlClient.SqlClient | Database.Database>
  | { readonly unavailable: string }

const noTransport = {
  unavailable: "replay needs a transport to publish to, and this bulwark binary has none wired in. " +
    "Replay from your application with Replay.replay (any Publisher), or build a command with " +
    "`Cli.make({ publisher })` from @bulwark/dead-letter. Nothing was replayed."
}

const replayCommand = (publisher: PublisherSource) =>
  Command.make("replay", {
    id: Options.text("id").pipe(Options.repeated, Options.withDescription("Replay this entry (repeatable).")),
    group: Options.text("group").pipe(
      Options.optional,
      Options.withDescription("Replay the failure group with this fingerprint (see `bulwark dlq groups`).")
    ),
    category,
    type,
    topic,
    rate: Options.float("rate").pipe(Options.withDefault(10), Options.withDescription("Messages per second (default 10)."))
  }, (args) =>
    Effect.gen(function*() {
      const badRate = rateProblem(args.rate)
      if (badRate !== undefined) return yield* Effect.fail(usage(badRate))
      yield* checkTexts([["--id", args.id], ["--type", args.type], ["--topic", args.topic]])
      if (Option.isSome(args.group)) {
        const badGroup = groupProblem(args.group.value)
        if (badGroup !== undefined) return yield* Effect.fail(usage(badGroup))
        if (args.id.length > 0) return yield* Effect.fail(usage("--group and --id cannot be combined: replay a group or entries"))
      }
      if ("unavailable" in publisher) return yield* Effect.fail(usage(publisher.unavailable))
      const filter: Omit<Store.Filter, "replay"> = {
        ...filterOf(args),
        ...Option.match(args.group, { onNone: () => ({}), onSome: (fingerprint) => ({ fingerprint }) })
      }
      const report = yield* withStoreAndPublisher(
        Replay.replay({
          ...(args.id.length > 0 ? { ids: args.id } : { filter }),
          rate: args.rate
        }).pipe(
          Effect.catchTag("EntryNotFoundError", (error) =>
            Effect.fail(new CliExit({ code: 1, message: `bulwark dlq: ${error.message}` })))
        ),
        publisher
      )
      yield* Console.log(
        `replayed ${report.replayed.length}, skipped ${report.skipped.length} (already replayed or in progress), failed ${report.failed.length}`
      )
      for (const failed of report.failed) yield* Console.error(`  ${failed.id}: ${failed.error.message}`)
      if (report.failed.length > 0) {
        return yield* Effect.fail(new CliExit({ code: 1, message: `bulwark dlq: ${report.failed.length} entries could not be published` }))
      }
    })).pipe(Command.withDescription("Publish entries back to their origin topic, rate-limited, each once."))

// Typed by a plain `string` name so it fits the CLI's list of subcommands (`Command<string, …>`).
const name: string = "dlq"

/** Builds the `dlq` command, replaying through `publisher`. */
export const make = (options: { readonly publisher: PublisherSource }) =>
  Command.make(name).pipe(
    Command.withDescription("Triage the dead-letter store: list, show, groups, replay, purge."),
    Command.withSubcommands([list, show, groups, replayCommand(options.publisher), purge])
  )

/** The `dlq` command without a transport: `replay` refuses (the `bulwark` binary builds its own with {@link make}). */
export const command = make({ publisher: noTransport })
