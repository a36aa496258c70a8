/**
 * Outbound load control on the real `@bulwark/resilience` in the simulator: the shared rate limit and the
 * bulkhead bound hold across crashing processes, and the wrong configurations are caught, shrunk and replayed.
 * Without its invariant, each wrong configuration passes every other one: the invariant is what catches it.
 */
import { describe, expect, it } from "@effect/vitest"
import { catalogue } from "../examples/resilience.js"
import * as Simulator from "../src/Simulator.js"
import { checkEntries, checkOnlyCaughtBy } from "./catalogue.js"

checkEntries(catalogue.map((e) => e.id), catalogue)

describe("load-control invariants are what catch the wrong configurations", () => {
  checkOnlyCaughtBy(catalogue)
})

describe("the shared limit is reached, not just kept", () => {
  it("three consumer processes, eight messages at once: calls go out at the limit, never above it", () => {
    const twin = catalogue.find((e) => e.id === "rate-limiter-per-process")!.twin
    const item = { key: 0, amount: 1, at: 0, spaced: false, poison: false }
    const run = Simulator.runScenario(twin, {
      seed: 0,
      workload: Array.from({ length: 8 }, (_, i) => ({ ...item, key: i % 3 })),
      faults: [],
      choices: []
    })
    expect(run.violations).toEqual([])
    const calls = run.history.events.filter((e) => e.lane === "downstream" && e.kind === "call")
    // Every message once, plus any hedge copy that got a permit before its first copy answered.
    expect(calls.length).toBeGreaterThanOrEqual(8)
    // The calls go out at the limit, 2 per second, from more than one process, from the first to the last:
    // a queued call is not hedged, and a hedge that lost gives its permit back, so none is wasted.
    calls.slice(0, 8).forEach((call, i) => expect(call.t - calls[0]!.t).toBeCloseTo(Math.floor(i / 2) * 1000, 3))
    expect(new Set(calls.slice(0, 4).map((e) => e.data?.node)).size).toBeGreaterThan(1)
  })
})
