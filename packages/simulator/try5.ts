import { simulation } from "./examples/reference.js"
import * as Simulator from "./src/Simulator.js"
const busy: any = {
  seed: 11,
  workload: [
    { key: 0, amount: 5, at: 0, spaced: false, poison: false },
    { key: 0, amount: 6, at: 0, spaced: true, poison: false },
    { key: 1, amount: 7, at: 10, spaced: false, poison: true },
    { key: 2, amount: 8, at: 200, spaced: false, poison: false }
  ],
  faults: [
    { kind: "duplicate", nth: 1, copies: 2 },
    { kind: "crash", node: 1, step: 3, down: 400 },
    { kind: "crash", node: 3, step: 2, down: 2_000 },
    { kind: "outage", at: 0, ms: 700 },
    { kind: "corrupt", nth: 0 },
    { kind: "replay", nth: 1, after: 45_000 },
    { kind: "forge", at: 5 },
    { kind: "partial", nth: 2, accepted: 0 }
  ],
  choices: [3, 1, 4, 1, 5]
}
const run = Simulator.runScenario(simulation, busy)
console.log(run.violations, run.stats, run.nodes)
console.log(Simulator.messageTimeline(run).filter((l) => l.includes("w2")|| l.startsWith(" ")).slice(0, 200).join("\n"))
