import { simulation } from "./examples/reference.js"
import * as Simulator from "./src/Simulator.js"
import * as Simulation from "./src/Simulation.js"
const runs = Number(process.argv[2] ?? 200)
const sim = Simulation.make({ ...simulation, name: "x", invariants: [] })
const t0 = Date.now()
const report = Simulator.check(sim, { runs, seed: 5 })
console.log(report.valid, report.runs, Date.now() - t0, "ms", (Date.now() - t0) / runs, "ms/run")
