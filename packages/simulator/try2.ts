import { simulation } from "./examples/reference.js"
import * as Simulator from "./src/Simulator.js"
const runs = Number(process.argv[2] ?? 200)
const seed = Number(process.argv[3] ?? 1)
const t0 = Date.now()
const report = Simulator.check(simulation, { runs, seed, shrinkBudget: 500 })
console.log(report.valid, report.runs, JSON.stringify(report.violations), Date.now() - t0, "ms")
console.log("faults", JSON.stringify(report.faultsInjected), "never crashed", report.processesNeverCrashed, "vacuous", report.vacuous)
if (!report.valid) { console.log(JSON.stringify(report.counterexample?.scenario)); console.log(report.counterexample?.timeline.join("\n")) }
