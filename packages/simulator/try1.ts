import { simulation } from "./examples/reference.js"
import * as Simulator from "./src/Simulator.js"
const t0 = Date.now()
const scenario = { seed: 1, workload: [{ key: 0, amount: 5, at: 0, spaced: false, poison: false }, { key: 0, amount: 6, at: 0, spaced: true, poison: true }], faults: [], choices: [] }
const run = Simulator.runScenario(simulation, scenario as any)
console.log(run.valid, run.violations, run.stats, run.virtualTime, run.events, Date.now() - t0, "ms")
console.log(Simulator.trace(run).slice(0, 60).join("\n"))
