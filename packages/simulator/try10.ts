import { simulation } from "./examples/reference.js"
import * as Simulator from "./src/Simulator.js"
const sc: any = { seed: 1, workload: [{ key: 0, amount: 5, at: 0, spaced: false, poison: false }], faults: [], choices: [] }
for (let i = 0; i < 30; i++) Simulator.runScenario(simulation, sc)
const t0 = performance.now()
for (let i = 0; i < 200; i++) Simulator.runScenario(simulation, sc)
console.log(((performance.now() - t0) / 200).toFixed(2), "ms/run")
