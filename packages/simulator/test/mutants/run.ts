/**
 * Checks one mutant (named by the first argument) and prints one JSON line: whether a violation was found,
 * which invariant, after how many scenarios, the shrunk size, and the times. `mutation.ts` runs it in a child
 * process per mutant, since a module, once loaded, stays loaded: from a bundle of the sources with the mutant
 * applied, or (should bundling fail) through tsx with `hook.mjs` applying it (`BULWARK_MUTANT` set).
 */
import * as Simulator from "../../src/Simulator.js"
import { mutants, simulationOf } from "./catalogue.js"

const [id, seedText, runsText, mode] = process.argv.slice(2)
const mutant = mutants.find((m) => m.id === id)
if (mutant === undefined) {
  process.stderr.write(`unknown mutant ${id}\n`)
  process.exit(2)
}
const seed = Number(seedText ?? 1)
const started = Date.now()
let foundAfter = -1
let foundAt = 0
const report = Simulator.check(simulationOf(mutant), {
  runs: Number(runsText ?? mutant.runs ?? 150),
  seed,
  shrinkBudget: mutant.shrinkBudget ?? 200,
  // "find": stop at the first failing scenario (how many scenarios it takes to find, without shrinking).
  ...(mode === "find" ? { shrink: false } : {}),
  onRun: (run, index) => {
    if (!run.valid && foundAfter < 0) {
      foundAfter = index + 1
      foundAt = Date.now()
    }
  }
})
const ended = Date.now()
process.stdout.write(JSON.stringify({
  id: mutant.id,
  seed,
  caught: !report.valid,
  invariant: report.violations[0]?.invariant,
  message: report.violations[0]?.message,
  expected: mutant.caughtBy,
  scenariosToFind: foundAfter,
  size: report.counterexample?.size,
  shrinks: report.shrinks,
  findMillis: foundAfter < 0 ? ended - started : foundAt - started,
  shrinkMillis: foundAfter < 0 ? 0 : ended - foundAt,
  replay: report.replay
}) + "\n")
