/**
 * `bulwark simulate <module> [--runs N] [--seed S] [--path P] [--json] [--junit FILE] [--html FILE] [--regression FILE]`:
 * checks the simulation a module exports (`simulation`, or the default export).
 *
 * Exit codes: 0 every invariant held; 1 a counterexample (printed, with its replay command); 2 bad usage or a
 * module that cannot be loaded.
 */
import { writeFileSync } from "node:fs"
import { dirname, isAbsolute, relative, resolve } from "node:path"
import { pathToFileURL } from "node:url"
import { Args, Command, Options } from "@effect/cli"
import { Console, Data, Effect, Option } from "effect"
import * as Html from "./Html.js"
import { isSimulation, type Simulation } from "./Simulation.js"
import * as Simulator from "./Simulator.js"

/** A deliberate exit with a code (the CLI runner prints the message and exits with it). */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly code: 1 | 2
  readonly message: string
}> {}

const usage = (message: string) => new CliExit({ code: 2, message: `bulwark simulate: ${message}` })

/** Loads the simulation a module exports, or fails with a usage error (never a stack trace). */
export const load = (module: string): Effect.Effect<Simulation, CliExit> =>
  Effect.gen(function*() {
    const path = isAbsolute(module) ? module : resolve(process.cwd(), module)
    const loaded = yield* Effect.tryPromise({
      try: () => import(pathToFileURL(path).href) as Promise<Record<string, unknown>>,
      catch: (error) => usage(`cannot load ${module}: ${error instanceof Error ? error.message.split("\n")[0] : String(error)}`)
    })
    const candidate = loaded.simulation ?? loaded.default
    if (!isSimulation(candidate)) {
      return yield* usage(`${module} does not export a simulation (export const simulation = Simulation.make({ … }))`)
    }
    return candidate
  })

const escapeXml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

/** A JUnit XML document with one test case per simulation. */
export const junit = (report: Simulator.Report): string => {
  const failure = report.valid
    ? ""
    : `<failure message="${escapeXml(report.violations.map((v) => `${v.invariant}: ${v.message}`).join("; "))}">${
      escapeXml([...(report.counterexample?.timeline ?? []), report.replay ?? ""].join("\n"))
    }</failure>`
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<testsuite name="bulwark simulate" tests="1" failures="${report.valid ? 0 : 1}">`,
    `  <testcase classname="simulation" name="${escapeXml(report.simulation)}">${failure}</testcase>`,
    `</testsuite>`,
    ``
  ].join("\n")
}

const module = Args.text({ name: "module" }).pipe(Args.withDescription("A module exporting a simulation (`simulation` or default)."))
const runs = Options.integer("runs").pipe(Options.withDefault(100), Options.withDescription("Scenarios to run."))
const seed = Options.integer("seed").pipe(Options.optional, Options.withDescription("fast-check seed (default: fresh, printed)."))
const path = Options.text("path").pipe(Options.optional, Options.withDescription("fast-check path of a counterexample to replay."))
const json = Options.boolean("json").pipe(Options.withDescription("Print the JSON report instead of the summary."))
const junitFile = Options.file("junit").pipe(Options.optional, Options.withDescription("Write a JUnit XML report here."))
const regressionFile = Options.file("regression").pipe(
  Options.optional,
  Options.withDescription("Write a vitest regression test replaying the counterexample here.")
)
const htmlFile = Options.file("html").pipe(Options.optional, Options.withDescription("Write the HTML timeline of the counterexample here."))

const simulate = Command.make(
  "simulate",
  { module, runs, seed, path, json, junit: junitFile, html: htmlFile, regression: regressionFile },
  (args) =>
    Effect.gen(function*() {
      if (args.runs < 1) return yield* usage("--runs must be at least 1")
      if (Option.isSome(args.path) && Option.isNone(args.seed)) return yield* usage("--path needs the --seed it was recorded with")
      const simulation = yield* load(args.module)
      const tty = process.stderr.isTTY === true && !args.json
      const faults = new Map<string, number>()
      const report = Simulator.check(simulation, {
        runs: args.runs,
        module: args.module,
        ...Option.match(args.seed, { onNone: () => ({}), onSome: (seed) => ({ seed }) }),
        ...Option.match(args.path, { onNone: () => ({}), onSome: (path) => ({ path }) }),
        onRun: (run, index) => {
          for (const [kind, n] of run.history.faults) faults.set(kind, (faults.get(kind) ?? 0) + n)
          if (tty) {
            const done = Math.min(index + 1, args.runs)
            const bar = "#".repeat(Math.round((done / args.runs) * 30)).padEnd(30, ".")
            process.stderr.write(`\r[${bar}] ${index + 1} runs${run.valid ? "" : " (shrinking)"}   `)
          }
        }
      })
      if (tty) process.stderr.write("\n")
      if (Option.isSome(args.junit)) writeFileSync(args.junit.value, junit(report))
      if (Option.isSome(args.html) && report.counterexample !== undefined) {
        writeFileSync(args.html.value, Html.render(report, Simulator.runScenario(simulation, report.counterexample.scenario)))
      }
      if (Option.isSome(args.regression) && report.counterexample !== undefined) {
        const target = isAbsolute(args.module) ? args.module : resolve(process.cwd(), args.module)
        const from = relative(dirname(resolve(args.regression.value)), target).replace(/\\/g, "/").replace(/\.ts$/, ".js")
        // The regression test imports the module's named `simulation` export.
        writeFileSync(args.regression.value, Simulator.regressionTest(report, from.startsWith(".") ? from : `./${from}`))
      }
      if (args.json) {
        yield* Console.log(JSON.stringify(report, null, 2))
      } else {
        const injected = Object.entries(report.faultsInjected).map(([k, n]) => `${k}×${n}`).join(", ") || "none"
        yield* Console.log(`${report.simulation}: ${report.runs} runs, seed ${report.seed}, faults injected: ${injected}`)
        if (report.processesNeverCrashed.length > 0) {
          yield* Console.log(`processes never crashed: ${report.processesNeverCrashed.join(", ")}`)
        }
        if (report.vacuous.length > 0) yield* Console.log(`vacuous (nothing to judge in any run): ${report.vacuous.join(", ")}`)
        if (report.valid) {
          yield* Console.log("all invariants held")
        } else {
          for (const v of report.violations) yield* Console.log(`VIOLATED ${v.invariant}: ${v.message} (t=${v.at.toFixed(3)}ms)`)
          const s = report.stats
          yield* Console.log(
            `attempted ${s.attempted}, acknowledged ${s.acknowledged}, applied ${s.applied}, lost ${s.lost}, unexpected ${s.unexpected}, ` +
              `duplicated ${s.duplicated}, duplicate deliveries ${s.duplicateDeliveries}, dead-lettered ${s.deadLettered}, pending ${s.pending}`
          )
          if (report.counterexample !== undefined) {
            yield* Console.log(`minimal counterexample (${report.counterexample.size} generated events, ${report.shrinks} shrinks):`)
            yield* Console.log(JSON.stringify(report.counterexample.scenario))
            yield* Console.log(report.counterexample.timeline.join("\n"))
          }
        }
      }
      if (!report.valid) {
        return yield* new CliExit({ code: 1, message: `invariant violated — replay with: ${report.replay ?? ""}` })
      }
    })
).pipe(Command.withDescription("Run a simulation: generated faults, invariants, whole-run shrinking, replay."))

/** The `simulate` subcommand (typed by its name as a plain string, as the root command's list expects). */
export const command = simulate as unknown as Command.Command<string, never, CliExit, unknown>
