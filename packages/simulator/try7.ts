import { simulation } from "./examples/reference.js"
import * as Simulator from "./src/Simulator.js"
const sc: any = { seed: 1, workload: [{ key: 0, amount: 5, at: 0, spaced: false, poison: false }], faults: [], choices: [] }
for (let i = 0; i < 20; i++) Simulator.runScenario(simulation, sc)
let t0 = performance.now()
for (let i = 0; i < 100; i++) Simulator.runScenario(simulation, sc)
console.log("1 msg no faults", ((performance.now() - t0) / 50).toFixed(2), "ms/run")
const sc2: any = { seed: 1, workload: Array.from({length: 8}, (_, i) => ({ key: i % 3, amount: 5, at: i * 100, spaced: false, poison: false })), faults: [], choices: [] }
t0 = performance.now()
for (let i = 0; i < 50; i++) Simulator.runScenario(simulation, sc2)
console.log("8 msgs no faults", ((performance.now() - t0) / 50).toFixed(2), "ms/run")
const r = Simulator.runScenario(simulation, sc2); console.log(r.virtualTime, r.events, r.history.events.length)
