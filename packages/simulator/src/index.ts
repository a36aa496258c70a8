/** The Bulwark simulator: deterministic virtual time, generated faults, invariants and whole-run shrinking. */
export * as Scheduler from "./Scheduler.js"
export * as Scenario from "./Scenario.js"
export * as History from "./History.js"
export * as World from "./World.js"
export * as Invariant from "./Invariant.js"
export * as Simulation from "./Simulation.js"
export * as Simulator from "./Simulator.js"
export * as Html from "./Html.js"
