/**
 * Counterexamples the simulator found in `@bulwark/dead-letter` (see `examples/bugs.ts`) and in its own judgement, replayed exactly.
 * Each failed before its fix; the invariant it broke is named.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Bugs from "../examples/bugs.js"
import { simulation as reference } from "../examples/reference.js"
import type { Scenario } from "../src/Scenario.js"
import * as Simulator from "../src/Simulator.js"

describe("regressions found by the simulator", () => {
  it("replay-once: two replayers, a claim lease shorter than the rate-limit spacing: both published one entry", () => {
    const scenario: Scenario = {"seed": 0, "workload": [{"key": 0, "amount": 1, "at": 0, "spaced": false, "poison": false}, {"key": 0, "amount": 1, "at": 0, "spaced": false, "poison": false}, {"key": 0, "amount": 1, "at": 0, "spaced": false, "poison": false}, {"key": 0, "amount": 1, "at": 0, "spaced": false, "poison": false}], "faults": [{"kind": "outage", "at": 0, "ms": 5001}], "choices": []}
    const run = Simulator.runScenario(Bugs.replayLeaseExpiry, scenario)
    expect(run.violations).toEqual([])
  }, 300_000)

  it("replay-once: the drain crashed after storing a dead letter and before acking it: its redelivered copy put an already replayed entry back to pending, and it was replayed again", () => {
    const scenario: Scenario = {"seed": 0, "workload": [{"key": 0, "amount": 1, "at": 0, "spaced": false, "poison": false}, {"key": 0, "amount": 1, "at": 0, "spaced": false, "poison": false}, {"key": 0, "amount": 1, "at": 0, "spaced": false, "poison": false}, {"key": 0, "amount": 1, "at": 0, "spaced": false, "poison": false}], "faults": [{"kind": "outage", "at": 0, "ms": 8004}, {"kind": "crash", "node": 3, "step": 22, "down": 500}], "choices": []}
    const run = Simulator.runScenario(Bugs.replayCrash, scenario)
    expect(run.violations).toEqual([])
  }, 300_000)

  it("no-transient-dead-letters: a broker duplicate window dropped the replayed message (same id), and the entry was marked replayed", () => {
    const scenario: Scenario = {"seed": 0, "workload": [{"key": 0, "amount": 1, "at": 0, "spaced": false, "poison": false}], "faults": [{"kind": "outage", "at": 0, "ms": 105}], "choices": []}
    const run = Simulator.runScenario(Bugs.replayDuplicateWindow, scenario)
    expect(run.violations).toEqual([])
  }, 300_000)

  it("webhook-authentic (the simulator's own judgement): a replay that arrived fresh, answered after the receiver's 30 s pause, was taken for a stale one accepted", () => {
    const scenario: Scenario = {"seed": 0, "workload": [{"key": 0, "amount": 1, "at": 0, "spaced": false, "poison": false}], "faults": [{"kind": "replay", "nth": 0, "after": 1}, {"kind": "stall", "node": 0, "step": 1, "ms": 30000}], "choices": []}
    const run = Simulator.runScenario(reference, scenario)
    expect(run.violations).toEqual([])
    // The replay was checked on arrival, 1 ms after the original, and accepted as the fresh request it was.
    expect(run.history.events.filter((e) => e.kind === "accepted" && e.data?.replay === true)).toHaveLength(1)
  }, 300_000)
})
