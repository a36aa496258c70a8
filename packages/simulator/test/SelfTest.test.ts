/**
 * The self-test gate: correct pipelines raise no false alarm. The docs' snippet, the reference pipeline and
 * the payments example's real consumers are checked at poison rates 0, 0.1 and 0.3 over several seeds, and
 * every invariant must hold in every run. (`bench/selftest.ts`, run by `npm run bench -- simulator`, is the
 * full gate: 10 seeds × 500 runs of each, 45,000 runs.)
 */
import { describe, expect, it } from "@effect/vitest"
import { simulation as docs } from "../../../docs/snippets/simulation.js"
import { simulation as payments } from "../../../examples/payments/test/payments.simulation.js"
import { simulation as reference } from "../examples/reference.js"
import * as Simulation from "../src/Simulation.js"
import * as Simulator from "../src/Simulator.js"

const runs = 40
const seeds = [101, 102]

describe("self-test gate: no false alarm on correct pipelines", () => {
  for (const [name, simulation] of [["docs snippet", docs], ["reference pipeline", reference], ["payments example", payments]] as const) {
    for (const poisonRate of [0, 0.1, 0.3]) {
      it(`${name}, poison rate ${poisonRate}: ${seeds.length} seeds × ${runs} runs, every invariant holds`, async () => {
        const gated = Simulation.make({ ...simulation, workload: { ...simulation.workload, poisonRate } })
        for (const seed of seeds) {
          const report = await Simulator.checkAsync(gated, { runs, seed, shrinkBudget: 50 })
          expect(report.violations, [report.replay ?? "", ...(report.counterexample?.timeline ?? [])].join("\n")).toEqual([])
        }
      }, 300_000)
    }
  }
})
