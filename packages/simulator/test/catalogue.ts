import { describe, expect, it } from "@effect/vitest"
import { catalogue, type Entry } from "../examples/catalogue.js"
import * as Simulation from "../src/Simulation.js"
import * as Simulator from "../src/Simulator.js"

/**
 * Checks catalogue entries: each wrong pipeline, built from the real packages, is caught by an invariant it
 * is expected to break, with a counterexample of at most 10 events that replays by seed and path; its twin
 * passes.
 */
export const checkEntries = (ids: ReadonlyArray<string>, from: ReadonlyArray<Entry> = catalogue) => {
  for (const id of ids) {
    const entry = from.find((e) => e.id === id)!
    describe(`planted bug: ${id}`, () => {
      it("is found, shrunk and replayed by seed and path", async () => {
        const report = await Simulator.checkAsync(entry.wrong, { runs: 150, seed: 1, shrinkBudget: 200 })
        expect(report.valid).toBe(false)
        expect(entry.caughtBy).toContain(report.violations[0]!.invariant)
        expect(report.counterexample!.size).toBeLessThanOrEqual(10)
        expect(report.replay).toContain("--seed 1 --path")
        const again = Simulator.runScenario(entry.wrong, report.counterexample!.scenario)
        expect(again.violations).toEqual(report.violations)
        expect(again.traceHash).toBe(report.counterexample!.traceHash)
        const replayed = Simulator.replay(entry.wrong, { seed: report.seed, path: report.path! })
        expect(replayed.valid).toBe(false)
        expect(replayed.violations[0]!.invariant).toBe(report.violations[0]!.invariant)
      }, 300_000)

      it("its correct twin keeps every invariant", async () => {
        const report = await Simulator.checkAsync(entry.twin, { runs: 20, seed: 1 })
        expect(report.violations).toEqual([])
        expect(report.valid).toBe(true)
      }, 300_000)
    })
  }
}

/**
 * Checks that each entry's wrong pipeline is caught only by the invariants it names: with those left out, it
 * keeps every other one, so they are what catches it.
 */
export const checkOnlyCaughtBy = (entries: ReadonlyArray<Entry>) => {
  for (const entry of entries) {
    it(`${entry.id}: without ${entry.caughtBy.join("/")}, nothing else notices`, async () => {
      const blind = Simulation.make({
        ...entry.wrong,
        invariants: entry.wrong.invariants.filter((i) => !entry.caughtBy.includes(i.name))
      })
      const report = await Simulator.checkAsync(blind, { runs: 20, seed: 1 })
      expect(report.violations).toEqual([])
    }, 300_000)
  }
}
