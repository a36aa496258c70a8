import { simulation } from "./examples/reference.js"
import * as Simulator from "./src/Simulator.js"
import * as Simulation from "./src/Simulation.js"
import { Effect } from "effect"
const empty: any = { seed: 1, workload: [], faults: [], choices: [] }
const time = (name: string, sim: any, sc: any) => {
  for (let i = 0; i < 10; i++) Simulator.runScenario(sim, sc)
  const t0 = performance.now()
  for (let i = 0; i < 30; i++) Simulator.runScenario(sim, sc)
  const r = Simulator.runScenario(sim, sc)
  console.log(name, ((performance.now() - t0) / 30).toFixed(2), "ms/run", "virtual", r.virtualTime, "events", r.events)
}
time("empty workload, reference", simulation, empty)
time("empty workload, nothing spawned", Simulation.make({ name: "n", pipeline: () => Effect.succeed(() => Effect.succeed(200)) }), empty)
time("1 msg, nothing spawned", Simulation.make({ name: "n", pipeline: () => Effect.succeed(() => Effect.succeed(200)) }), { ...empty, workload: [{ key: 0, amount: 5, at: 0, spaced: false, poison: false }] })
