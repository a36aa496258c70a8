import { simulation } from "./examples/reference.js"
import * as Simulator from "./src/Simulator.js"
import * as Simulation from "./src/Simulation.js"
const sim = Simulation.make({ ...simulation, name: "x" })
let vt = 0, ev = 0, n = 0, full = 0, hist = 0
const t0 = Date.now()
const report = Simulator.check(sim, { runs: 100, seed: 5, onRun: (run) => { n++; vt += run.virtualTime; ev += run.events; hist += run.history.events.length; if (run.virtualTime >= 139000) full++ } })
console.log(report.valid, Date.now() - t0, "ms; avg virtual", vt / n, "avg events", ev / n, "history", hist / n, "full-length runs", full)
