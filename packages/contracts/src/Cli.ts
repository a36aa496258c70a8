/**
 * `bulwark contracts export | check | diff`:
 *
 * - `export <module> [--dir D] [--asyncapi FILE]` writes `<service>.contract.json` for each service the module
 *   declares (`export const contracts = [Contract.service(...)]`, or the default export) into `D` (default
 *   `contracts`), carrying earlier versions over, and optionally the AsyncAPI 3.0 document;
 * - `check <module> [--dir D] [--against FILE]... [--frozen] [--junit FILE] [--json]` checks every consumer
 *   against every producer of its topics (this repository's files and the published files given), and every
 *   producer's version against its committed history under its compatibility mode;
 * - `diff <old> <new> [--mode M]` lists what changed between two contract files (or two JSON Schema files)
 *   and the verdict under each mode.
 *
 * Exit codes: 0 compatible; 1 a breaking change (named: field, direction, consumer, fix); 2 bad usage, a module
 * that does not load, or a file that is not a contract.
 */
import { Args, Command, Options } from "@effect/cli"
import { Console, Data, Effect, Option } from "effect"
import { readFileSync, writeFileSync } from "node:fs"
import { isAbsolute, resolve } from "node:path"
import { pathToFileURL } from "node:url"
import * as Check from "./Check.js"
import * as Compatibility from "./Compatibility.js"
import * as Contract from "./Contract.js"
import * as Project from "./Project.js"

/** A deliberate exit with a code (the CLI runner prints the message and exits with it). */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly code: 1 | 2
  readonly message: string
}> {}

const usage = (message: string) => new CliExit({ code: 2, message: `bulwark contracts: ${message}` })

/** Loads the services a module declares (`contracts`, or the default export: one service or a list). */
export const load = (module: string): Effect.Effect<ReadonlyArray<Contract.Service>, CliExit> =>
  Effect.gen(function*() {
    const path = isAbsolute(module) ? module : resolve(process.cwd(), module)
    const loaded = yield* Effect.tryPromise({
      try: () => import(pathToFileURL(path).href) as Promise<Record<string, unknown>>,
      catch: (error) => usage(`cannot load ${module}: ${error instanceof Error ? error.message.split("\n")[0] : String(error)}`)
    })
    const candidate = loaded.contracts ?? loaded.default
    const services = Array.isArray(candidate) ? candidate : [candidate]
    if (services.length === 0 || !services.every(Contract.isService)) {
      return yield* usage(`${module} does not export its contracts (export const contracts = [Contract.service("name", { produces, consumes })])`)
    }
    return services as ReadonlyArray<Contract.Service>
  })

// Declaration, file and I/O problems are usage errors (2): nothing was judged.
const asUsage = <A, R>(effect: Effect.Effect<A, Contract.ContractDeclarationError | Contract.ContractExportError | Contract.ContractFileError | Project.ContractIoError | CliExit, R>) =>
  Effect.mapError(effect, (error) => error._tag === "CliExit" ? error : usage(error.message))

const module = Args.text({ name: "module" }).pipe(Args.withDescription("A module exporting the contract declarations (`contracts`, or default)."))
const dir = Options.text("dir").pipe(Options.withDefault("contracts"), Options.withDescription("Where the contract files are committed (default: contracts)."))

const exportCommand = Command.make("export", {
  module,
  dir,
  asyncapi: Options.file("asyncapi").pipe(Options.optional, Options.withDescription("Also write the AsyncAPI 3.0 document here.")),
  title: Options.text("title").pipe(Options.withDefault("Event contracts"), Options.withDescription("The AsyncAPI document's title.")),
  apiVersion: Options.text("api-version").pipe(Options.withDefault("1.0.0"), Options.withDescription("The AsyncAPI document's info.version."))
}, (args) =>
  asUsage(Effect.gen(function*() {
    const services = yield* load(args.module)
    const result = yield* Project.exportTo(services, args.dir, Option.match(args.asyncapi, {
      onNone: () => ({}),
      onSome: (path) => ({ asyncapi: { path, info: { title: args.title, version: args.apiVersion } } })
    }))
    for (const path of result.written) yield* Console.log(`wrote ${path}`)
    for (const path of result.unchanged) yield* Console.log(`unchanged ${path}`)
  }))).pipe(Command.withDescription("Write each service's contract file (JSON Schema 2020-12) and optionally the AsyncAPI document."))

const checkCommand = Command.make("check", {
  module,
  dir,
  against: Options.file("against").pipe(Options.repeated, Options.withDescription("Another service's published contract file (repeatable): can I deploy?")),
  frozen: Options.boolean("frozen").pipe(Options.withDescription("Fail when a committed contract file is missing or out of date.")),
  junit: Options.file("junit").pipe(Options.optional, Options.withDescription("Write a JUnit XML report here.")),
  json: Options.boolean("json").pipe(Options.withDescription("Print the report as JSON."))
}, (args) =>
  Effect.gen(function*() {
    const services = yield* asUsage(load(args.module))
    const report = yield* asUsage(Project.checkAgainst(services, args.dir, { against: args.against, frozen: args.frozen }))
    if (Option.isSome(args.junit)) {
      yield* asUsage(Effect.try({
        try: () => writeFileSync(args.junit.pipe(Option.getOrThrow), Check.renderJUnit(report)),
        catch: (error) => new Project.ContractIoError({ path: Option.getOrThrow(args.junit), detail: String(error) })
      }))
    }
    yield* Console.log(args.json ? JSON.stringify(report, null, 2) : Check.renderText(report))
    if (!report.ok) {
      const errors = report.findings.filter((f) => f.severity === "error")
      return yield* new CliExit({
        code: 1,
        message: `bulwark contracts: ${errors.length} breaking change(s): ${
          errors.slice(0, 3).map((f) => `field ${f.field} (${f.direction})`).join("; ")
        }${errors.length > 3 ? "; …" : ""}`
      })
    }
  })).pipe(Command.withDescription("Check consumers against producers and each version against its history; exit 1 on a breaking change."))

const readJson = (path: string) =>
  Effect.try({
    try: () => JSON.parse(readFileSync(path, "utf8")) as unknown,
    catch: (error) => usage(`cannot read ${path}: ${error instanceof Error ? error.message : String(error)}`)
  })

const isContractFile = (u: unknown) => typeof u === "object" && u !== null && "bulwarkContracts" in u

interface DiffEntry {
  readonly name: string
  readonly mode: Compatibility.Mode
  readonly before: Compatibility.JsonSchema
  readonly after: Compatibility.JsonSchema
}

const verdictLine = (before: Compatibility.JsonSchema, after: Compatibility.JsonSchema) =>
  Compatibility.modes.filter((m) => m !== "NONE" && !m.endsWith("_TRANSITIVE"))
    .map((m) => `${m} ${Compatibility.isCompatible(m, before, after) ? "ok" : "breaking"}`).join(", ")

const diffCommand = Command.make("diff", {
  before: Args.file({ name: "old", exists: "yes" }).pipe(Args.withDescription("The old contract file (or JSON Schema).")),
  after: Args.file({ name: "new", exists: "yes" }).pipe(Args.withDescription("The new contract file (or JSON Schema).")),
  mode: Options.choice("mode", Compatibility.modes).pipe(Options.optional, Options.withDescription("Judge with this mode (default: each contract's own; BACKWARD for plain schemas)."))
}, (args) =>
  Effect.gen(function*() {
    const before = yield* readJson(args.before)
    const after = yield* readJson(args.after)
    const entries: Array<DiffEntry> = []
    if (isContractFile(before) && isContractFile(after)) {
      const a = yield* asUsage(Contract.parse(args.before, JSON.stringify(before)))
      const b = yield* asUsage(Contract.parse(args.after, JSON.stringify(after)))
      for (const p of b.produces) {
        const old = a.produces.find((e) => e.id === p.id)
        if (old === undefined) {
          yield* Console.log(`+ ${p.id} v${p.version} (new contract)`)
          continue
        }
        entries.push({ name: `${p.id} v${old.version} → v${p.version}`, mode: Option.getOrElse(args.mode, () => p.compatibility), before: old.schema, after: p.schema })
      }
      for (const p of a.produces) if (!b.produces.some((e) => e.id === p.id)) yield* Console.log(`- ${p.id} (contract removed)`)
      for (const c of b.consumes) {
        const old = a.consumes.find((e) => e.topic === c.topic && e.group === c.group)
        // A consumer's new schema must read what its old one accepted: BACKWARD.
        if (old !== undefined) entries.push({ name: `consumer ${c.group} of ${c.topic}`, mode: Option.getOrElse(args.mode, () => "BACKWARD" as const), before: old.schema, after: c.schema })
      }
    } else if (!isContractFile(before) && !isContractFile(after)) {
      entries.push({ name: `${args.before} → ${args.after}`, mode: Option.getOrElse(args.mode, () => "BACKWARD" as const), before: before as Compatibility.JsonSchema, after: after as Compatibility.JsonSchema })
    } else {
      return yield* usage("compare two contract files or two JSON Schema files, not one of each")
    }
    let breaking = 0
    for (const entry of entries) {
      const changes = Compatibility.readable(entry.before, entry.after)
      const reverse = Compatibility.readable(entry.after, entry.before)
      yield* Console.log(`${entry.name} (${entry.mode})`)
      if (changes.length === 0 && reverse.length === 0) {
        yield* Console.log("  no change")
        continue
      }
      for (const c of changes) yield* Console.log(`  backward ${c.compatible ? "ok      " : "BREAKING"} ${c.field}: ${c.message}`)
      for (const c of reverse) yield* Console.log(`  forward  ${c.compatible ? "ok      " : "BREAKING"} ${c.field}: ${c.message}`)
      yield* Console.log(`  verdict: ${verdictLine(entry.before, entry.after)}`)
      if (!Compatibility.isCompatible(entry.mode, entry.before, entry.after)) breaking++
    }
    if (breaking > 0) return yield* new CliExit({ code: 1, message: `bulwark contracts: ${breaking} contract(s) break under their mode` })
  })).pipe(Command.withDescription("Show what changed between two contract files and the verdict under each mode."))

// Typed by a plain `string` name so it fits the CLI's list of subcommands (`Command<string, …>`).
const name: string = "contracts"

/** The `contracts` subcommand. */
export const command = Command.make(name).pipe(
  Command.withDescription("Schema contracts between producers and consumers: export, check (CI), diff."),
  Command.withSubcommands([exportCommand, checkCommand, diffCommand])
) as unknown as Command.Command<string, never, CliExit, unknown>
