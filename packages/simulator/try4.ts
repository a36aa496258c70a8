import * as Bugs from "./examples/bugs.js"
import * as Simulator from "./src/Simulator.js"
import { writeFileSync } from "node:fs"
for (const [name, sim] of Object.entries(Bugs)) {
  const t0 = Date.now()
  const report = Simulator.check({ ...sim, invariants: sim.invariants.filter((i) => i.name !== "no-instant-dead-letter") }, { runs: 300, seed: 1, shrinkBudget: 500 })
  console.log(name, report.valid, report.runs, JSON.stringify(report.violations), report.counterexample?.size, Date.now() - t0, "ms")
  if (!report.valid) { console.log(JSON.stringify(report.counterexample?.scenario)); console.log(report.counterexample?.timeline.slice(0, 40).join("\n")) }
  if (!report.valid && process.argv[2] === "write") writeFileSync(`test/regression-${name}.json`, JSON.stringify(report.counterexample?.scenario))
}
