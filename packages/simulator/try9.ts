import * as Simulator from "./src/Simulator.js"
import * as Simulation from "./src/Simulation.js"
import { Effect } from "effect"
const empty: any = { seed: 1, workload: [], faults: [], choices: [] }
const sim = Simulation.make({ name: "n", pipeline: () => Effect.succeed(() => Effect.succeed(200)) })
for (let i = 0; i < 20; i++) Simulator.runScenario(sim, empty)
const t0 = performance.now()
for (let i = 0; i < 300; i++) Simulator.runScenario(sim, empty)
console.log(((performance.now() - t0) / 300).toFixed(2), "ms/run")
