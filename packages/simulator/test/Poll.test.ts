/**
 * The real poller (`@bulwark/poll`) in the simulator: late commits, slow and reordered pages, crashes at any
 * step (between the fetch, the publish and the cursor save included) and restarts. No acknowledged write is
 * lost and none is applied twice; the wrong configurations are caught, shrunk and replayed.
 */
import { describe, expect, it } from "@effect/vitest"
import { catalogue, correctPoller } from "../examples/poll.js"
import type * as Scenario from "../src/Scenario.js"
import * as Simulator from "../src/Simulator.js"
import { checkEntries, checkOnlyCaughtBy } from "./catalogue.js"

checkEntries(catalogue.map((e) => e.id), catalogue)

const item = (i: number): Scenario.WorkItem => ({ key: i % 3, amount: i + 1, at: i * 300, spaced: false, poison: false })

describe("the correct poller", () => {
  it("keeps every invariant under late commits, slow and reordered pages, crashes and restarts", async () => {
    const report = await Simulator.checkAsync(correctPoller, { runs: 60, seed: 7 })
    expect(report.violations).toEqual([])
    expect(report.valid).toBe(true)
  }, 300_000)

  it("crashes of either poller at each of its first steps: a page read but not committed is read again, applied once", () => {
    const workload = Array.from({ length: 4 }, (_, i) => item(i))
    let crashed = 0
    let inFlight = 0
    for (const node of [0, 1]) {
      for (let step = 0; step < 30; step++) {
        const run = Simulator.runScenario(correctPoller, {
          seed: 3,
          workload,
          faults: [{ kind: "crash", node, step, down: 200 }],
          choices: []
        })
        expect(run.violations).toEqual([])
        expect(run.stats.applied).toBe(workload.length)
        expect(run.stats.duplicated).toBe(0)
        const events = run.history.events
        const at = events.findIndex((e) => e.lane === "fault" && e.kind === "crash")
        if (at < 0) continue
        crashed++
        // The crash fell between a non-empty page read and its commit (`poll:page` follows a commit).
        let lastRead = at - 1
        while (lastRead >= 0 && !(events[lastRead]!.kind === "source-page" && Number(events[lastRead]!.data?.items) > 0)) lastRead--
        if (lastRead >= 0 && !events.slice(lastRead, at).some((e) => e.kind === "poll:page" && Number(e.data?.items) > 0)) inFlight++
      }
    }
    expect(crashed).toBeGreaterThan(20)
    expect(inFlight).toBeGreaterThan(3)
  }, 120_000)
})

describe("the poller's wrong configurations are caught by the invariant they break", () => {
  checkOnlyCaughtBy(catalogue)
})
