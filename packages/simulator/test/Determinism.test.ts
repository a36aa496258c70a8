import { describe, expect, it } from "@effect/vitest"
import { simulation } from "../examples/reference.js"
import * as Invariant from "../src/Invariant.js"
import * as Simulation from "../src/Simulation.js"
import * as Simulator from "../src/Simulator.js"
import { faultKinds, type Scenario } from "../src/Scenario.js"

const busy: Scenario = {
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

describe("determinism", () => {
  it("the same scenario gives the same trace hash and stats, run twice, with the real packages inside", () => {
    const a = Simulator.runScenario(simulation, busy)
    const b = Simulator.runScenario(simulation, busy)
    expect(a.traceHash).toBe(b.traceHash)
    expect(Simulator.trace(a)).toEqual(Simulator.trace(b))
    expect(a.stats).toEqual(b.stats)
    // The correct pipeline survives all of it.
    expect(a.violations).toEqual([])
    expect(a.stats).toMatchObject({ attempted: 4, acknowledged: 4, applied: 3, deadLettered: 1, lost: 0, unexpected: 0, duplicated: 0 })
    expect(a.stats.duplicateDeliveries).toBeGreaterThan(0)
    expect(a.nodes.filter((node) => node.crashes > 0).map((node) => node.name)).toEqual(["ledger-1", "relay"])
  }, 300_000)

  it("the same check seed gives a byte-identical report", () => {
    const a = JSON.stringify(Simulator.check(simulation, { runs: 8, seed: 2024 }))
    const b = JSON.stringify(Simulator.check(simulation, { runs: 8, seed: 2024 }))
    expect(a).toBe(b)
    expect(JSON.parse(a).valid).toBe(true)
  }, 300_000)

  it("user invariants compose with the built-in ones", () => {
    const oneKey = Invariant.make({
      name: "k0-applied-once",
      description: "(deliberately strict) key k0 is applied at most once",
      onEvent: (event, history) =>
        event.kind === "effect" && event.data?.key === "k0" &&
          [...(history.effects.get("downstream")?.keys() ?? [])].filter((ref) => ref === "w0" || ref === "w1").length > 1
          ? "more than one k0 effect"
          : undefined
    })
    const strict = Simulation.make({ ...simulation, name: "strict", invariants: [...Invariant.all, oneKey] })
    const run = Simulator.runScenario(strict, busy)
    expect(run.violations[0]?.invariant).toBe("k0-applied-once")
  }, 300_000)
})

describe("fault coverage", () => {
  it("a check of the reference pipeline fires every fault kind, crashes every process, judges every invariant, and stays valid", async () => {
    const suite = Simulation.make({
      ...simulation,
      name: "coverage",
      workload: { poisonRate: 0.3, weights: { crash: 10, slow: 3, partial: 2, replay: 2 } }
    })
    const report = await Simulator.checkAsync(suite, { runs: 150, seed: 3 })
    expect(report.violations).toEqual([])
    expect(report.processesNeverCrashed).toEqual([])
    expect(report.vacuous).toEqual([])
    for (const kind of faultKinds) expect(report.faultsInjected[kind] ?? 0).toBeGreaterThan(0)
  }, 300_000)
})
