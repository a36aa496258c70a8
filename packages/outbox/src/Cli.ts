/**
 * `bulwark outbox dead [--topic T] [--limit N] [--json] | requeue (--id N … | --topic T | --all)`: the rows
 * the relay gave up on, and putting them back once their cause is fixed. The SQL outbox chosen by
 * `BULWARK_DATABASE_URL` (a postgres:// URL) or, by default, the embedded PGlite in `BULWARK_DATA_DIR`
 * (default `.bulwark/pglite`); `BULWARK_OUTBOX_TABLE` names the table (default `bulwark_outbox`).
 *
 * Every command says which store it uses first, on stderr, and never creates an embedded database that does
 * not exist (it would only report an empty outbox). Options are validated before anything is opened.
 *
 * Exit codes: 0 success; 1 an unreachable database; 2 bad usage, a bad URL or option, or a missing
 * embedded store.
 */
import { Command, Options } from "@effect/cli"
import { Database } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Config, ConfigError, Console, Data, Effect, Layer, Option } from "effect"
import { existsSync } from "node:fs"
import { join, resolve } from "node:path"
import { OutboxStore, type RequeueSelection } from "./OutboxStore.js"
import * as Sql from "./OutboxStore/Sql.js"

/** A deliberate exit with a code (the CLI runner prints the message and exits with it). */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly code: 1 | 2
  readonly message: string
}> {}

const usage = (message: string) => new CliExit({ code: 2, message: `bulwark outbox: ${message}` })

/** The database, as configured, after saying which one on stderr; an embedded one that does not exist is refused. */
const chooseDatabase: Effect.Effect<
  Layer.Layer<SqlClient.SqlClient | Database.Database, SqlError | Database.DatabaseUrlError>,
  CliExit | ConfigError.ConfigError | Database.DatabaseUrlError
> = Effect.gen(function*() {
  const table = yield* Config.withDefault(Config.string("BULWARK_OUTBOX_TABLE"), Sql.defaultTable)
  const url = Option.map(yield* Config.option(Config.string("BULWARK_DATABASE_URL")), (value) => value.trim())
  if (Option.isSome(url) && url.value !== "") {
    yield* Database.parseUrl(url.value)
    yield* Console.error(`store: ${Transport.redactUrl(url.value)} (table ${table})`)
    return Database.layerPostgres({ url: url.value })
  }
  const dataDir = yield* Config.withDefault(Config.string("BULWARK_DATA_DIR"), Database.defaultDataDir)
  const shown = resolve(dataDir)
  // PGlite writes PG_VERSION when it creates a database.
  if (!existsSync(join(dataDir, "PG_VERSION"))) {
    return yield* usage(
      `no outbox at ${shown}: there is no embedded database there. Point BULWARK_DATABASE_URL at your Postgres ` +
        "or BULWARK_DATA_DIR at the application's data directory."
    )
  }
  yield* Console.error(`store: PGlite at ${shown} (table ${table})`)
  return Database.layerPglite({ dataDir })
})

const storeLayer = Layer.unwrapEffect(
  Effect.map(Config.withDefault(Config.string("BULWARK_OUTBOX_TABLE"), Sql.defaultTable), (table) => Sql.layer({ table }))
)

// Opening the store is where a bad URL or table (usage, 2) or an unreachable database (1) shows up.
const withStore = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | CliExit, Exclude<R, OutboxStore>> =>
  Effect.flatMap(chooseDatabase, (database) => Effect.provide(effect, storeLayer.pipe(Layer.provide(database)))).pipe(
    Effect.catchAll((error): Effect.Effect<never, E | CliExit> => {
      if (ConfigError.isConfigError(error)) return Effect.fail(usage(`bad configuration: ${String(error)}`))
      const tag = (error as { readonly _tag?: string })._tag
      if (tag === "CliExit") return Effect.fail(error as CliExit)
      if (tag === "DatabaseUrlError" || tag === "InvalidTableName") return Effect.fail(usage((error as { readonly message: string }).message))
      if (tag === "SqlError" || tag === "OutboxStoreError") {
        return Effect.fail(new CliExit({ code: 1, message: `bulwark outbox: cannot use the outbox database: ${(error as Error).message}` }))
      }
      return Effect.fail(error as E)
    })
  ) as Effect.Effect<A, E | CliExit, Exclude<R, OutboxStore>>

/** Checks `--limit`: the reason it is unusable, if it is. */
export const limitProblem = (limit: number): string | undefined =>
  Number.isSafeInteger(limit) && limit >= 1 ? undefined : `--limit must be a whole number of at least 1, got ${limit}`

/** Parses a row id: the id, or the reason it is unusable. */
export const parseId = (text: string): number | string => {
  const id = /^\s*\d+\s*$/.test(text) ? Number(text) : NaN
  return Number.isSafeInteger(id) && id >= 1 ? id : `--id must be a row id (a whole number of at least 1, as \`dead\` lists), got ${JSON.stringify(text.slice(0, 64))}`
}

/** Checks `--topic`: the reason it is unusable, if it is. */
export const topicProblem = (topic: string): string | undefined =>
  topic.trim() === ""
    ? "--topic must not be empty"
    : topic.length > 1024 || /[\u0000-\u001f\u007f]/.test(topic)
    ? "--topic is longer than 1024 characters or contains a control character"
    : undefined

const topic = Options.text("topic").pipe(Options.optional)

const dead = Command.make("dead", {
  topic: topic.pipe(Options.withDescription("Only rows of this topic.")),
  limit: Options.integer("limit").pipe(Options.withDefault(100), Options.withDescription("At most this many rows (default 100).")),
  json: Options.boolean("json").pipe(Options.withDescription("Machine-readable JSON output."))
}, (args) =>
  Effect.gen(function*() {
    const problem = limitProblem(args.limit) ?? Option.getOrUndefined(Option.map(args.topic, topicProblem))
    if (problem !== undefined) return yield* Effect.fail(usage(problem))
    yield* withStore(Effect.gen(function*() {
      const store = yield* OutboxStore
      const rows = yield* store.deadLetters(args.limit, Option.getOrUndefined(args.topic))
      if (args.json) return yield* Console.log(JSON.stringify(rows.map((row) => ({ ...row, error: { ...row.error } })), null, 2))
      if (rows.length === 0) return yield* Console.log("no dead outbox rows")
      const header = ["ID", "TOPIC", "MESSAGE ID", "KEY", "ATTEMPTS", "DLQ COPY", "ERROR"]
      const cells = rows.map((row) => [
        String(row.id),
        row.topic,
        row.messageId,
        row.key === "" ? "-" : row.key,
        String(row.attempts),
        row.deadLetterPublished ? "published" : "not published",
        `${row.error.tag}: ${row.error.message}`.replace(/\s+/g, " ").slice(0, 60)
      ])
      const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)))
      const line = (cs: ReadonlyArray<string>) => cs.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()
      yield* Console.log([line(header), ...cells.map(line)].join("\n"))
      yield* Console.log(`\n${rows.length} dead row${rows.length === 1 ? "" : "s"}; put them back with: bulwark outbox requeue --id <ID> | --topic <TOPIC> | --all`)
    }))
  })).pipe(Command.withDescription("List the outbox rows the relay gave up on, oldest first."))

const requeue = Command.make("requeue", {
  id: Options.text("id").pipe(Options.repeated, Options.withDescription("Requeue this row (repeatable).")),
  topic: topic.pipe(Options.withDescription("Requeue every dead row of this topic.")),
  all: Options.boolean("all").pipe(Options.withDescription("Requeue every dead row."))
}, (args) =>
  Effect.gen(function*() {
    const chosen = [args.id.length > 0, Option.isSome(args.topic), args.all].filter(Boolean).length
    if (chosen !== 1) return yield* Effect.fail(usage("requeue needs exactly one of --id (repeatable), --topic or --all"))
    const ids = args.id.map(parseId)
    const problem = ids.find((p): p is string => typeof p === "string") ?? Option.getOrUndefined(Option.map(args.topic, topicProblem))
    if (problem !== undefined) return yield* Effect.fail(usage(problem))
    const selection: RequeueSelection = args.id.length > 0
      ? { ids: ids as ReadonlyArray<number> }
      : Option.match(args.topic, { onNone: () => ({}), onSome: (topic) => ({ topic }) })
    yield* withStore(Effect.gen(function*() {
      const store = yield* OutboxStore
      const requeued = yield* store.requeueDead(selection)
      yield* Console.log(`requeued ${requeued} dead row${requeued === 1 ? "" : "s"}; the relay publishes them again`)
      if (args.id.length > requeued) {
        yield* Console.error(`${args.id.length - requeued} of the given ids are not dead rows (unknown, pending or published)`)
      }
    }))
  })).pipe(Command.withDescription("Put dead outbox rows back to pending with a fresh attempt count."))

// Typed by a plain `string` name so it fits the CLI's list of subcommands (`Command<string, …>`).
const name: string = "outbox"

/** The `outbox` command: `dead` and `requeue`. */
export const command = Command.make(name).pipe(
  Command.withDescription("Dead outbox rows: list them and put them back once their cause is fixed."),
  Command.withSubcommands([dead, requeue])
)
