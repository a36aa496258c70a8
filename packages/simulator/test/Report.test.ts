import { describe, expect, it } from "@effect/vitest"
import { catalogue } from "../examples/catalogue.js"
import * as Html from "../src/Html.js"
import * as Simulator from "../src/Simulator.js"

describe("failure output", () => {
  const entry = catalogue.find((e) => e.id === "no-dedupe")!
  let cached: { report: Simulator.Report; run: Simulator.RunResult } | undefined
  const found = () => {
    if (cached === undefined) {
      const report = Simulator.check(entry.wrong, { runs: 100, seed: 5, module: "examples/dedupe.ts" })
      cached = { report, run: Simulator.runScenario(entry.wrong, report.counterexample!.scenario) }
    }
    return cached
  }

  it("reports Jepsen-style counts and a per-message timeline", () => {
    const { report } = found()
    expect(report.valid).toBe(false)
    expect(report.stats.duplicated).toBeGreaterThan(0)
    expect(report.counterexample!.timeline[0]).toMatch(/^w\d+ — /)
    expect(report.counterexample!.timeline.some((line) => line.includes("effect") && line.includes("count=2"))).toBe(true)
    expect(report.replay).toMatch(/^bulwark simulate examples\/dedupe\.ts --seed 5 --path "[\d:]+"$/)
  }, 300_000)

  it("renders an HTML timeline with a lane per component and the faults marked", () => {
    const { report, run } = found()
    const html = Html.render(report, run)
    for (const lane of ["sender", "webhook", "transport", "downstream", "fault"]) expect(html).toContain(`>${lane}</text>`)
    expect(html).toContain(`fill="#d33"`)
  }, 300_000)

  it("exports a vitest regression test that replays the counterexample", () => {
    const { report } = found()
    const source = Simulator.regressionTest(report, "../examples/dedupe.js")
    expect(source).toContain(`import { simulation } from "../examples/dedupe.js"`)
    expect(source).toContain(JSON.stringify(report.counterexample!.scenario, null, 2))
    expect(source).toContain("expect(run.violations).toEqual([])")
  }, 300_000)
})
