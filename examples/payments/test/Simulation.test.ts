/**
 * The example's real receiver, consumers, relay and replay under generated faults (see payments.simulation.ts),
 * crashes of any of its processes included. Each check is a fixed
 * fast-check seed, so a failure reproduces exactly; the report's timeline says what happened to each message.
 */
import { Simulation, Simulator } from "@bulwark/simulator"
import { describe, expect, it } from "vitest"
import { simulation } from "./payments.simulation.js"

const expectValid = (report: Simulator.Report) => {
  expect(report.violations, [report.replay ?? "", ...(report.counterexample?.timeline ?? [])].join("\n")).toEqual([])
  expect(report.valid).toBe(true)
  expect(report.stats).toMatchObject({ lost: 0, duplicated: 0, unexpected: 0, pending: 0 })
}

describe("the payments example under the simulator", () => {
  it("keeps every invariant under every fault kind: nothing lost, each effect once, order per customer", async () => {
    const report = await Simulator.checkAsync(simulation, { runs: 30, seed: 20261201, shrinkBudget: 100 })
    expectValid(report)
    // Poison orders (the API's 422) end in the dead-letter queue, not in an endless retry.
    expect(report.stats.deadLettered).toBeGreaterThan(0)
    expect(report.stats.duplicateDeliveries).toBeGreaterThan(0)
  })

  it("ships what it can through crashes, duplicates and partial publishes", async () => {
    const hostile = Simulation.make({
      ...simulation,
      name: "payments example, crash-heavy",
      workload: { poisonRate: 0, maxMessages: 10, keys: 3, weights: { crash: 6, duplicate: 2, partial: 2 } }
    })
    const report = await Simulator.checkAsync(hostile, { runs: 30, seed: 11, shrinkBudget: 100 })
    expectValid(report)
    // Without poison, only an outage longer than the retry policy dead-letters: most messages are applied.
    expect(report.stats.applied).toBeGreaterThan(report.stats.deadLettered)
    expect(report.faultsInjected.crash ?? 0).toBeGreaterThan(0)
    // Without poison nothing is rejected for good, and the example sends no outbound webhooks: those two
    // invariants alone have nothing to judge.
    expect(report.vacuous).toEqual(["permanent-not-retried", "webhook-delivered-once"])
  })
})
