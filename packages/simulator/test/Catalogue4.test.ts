import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { catalogue, only, partnerRate, partnerRateChecks, shortSchedule, shortScheduleChecks } from "../examples/catalogue.js"
import { pipeline } from "../examples/pipeline.js"
import { type Event, History } from "../src/History.js"
import * as Invariant from "../src/Invariant.js"
import * as Scenario from "../src/Scenario.js"
import * as Simulation from "../src/Simulation.js"
import * as Simulator from "../src/Simulator.js"
import { checkEntries, checkOnlyCaughtBy } from "./catalogue.js"

checkEntries(["commit-then-publish", "check-then-post", "sender-in-consumer", "partner-limiter-per-process"])

describe("the partner's rate limit, kept by both dispatcher processes", () => {
  const entry = catalogue.find((e) => e.id === "partner-limiter-per-process")!

  it("six notifications at once: permits are refused, requests go out at the limit, every one is delivered", () => {
    const item = { key: 0, amount: 1, at: 0, spaced: false, poison: false }
    const run = Simulator.runScenario(entry.twin, {
      seed: 0,
      workload: Array.from({ length: 6 }, (_, i) => ({ ...item, key: i % 3 })),
      faults: [],
      choices: []
    })
    expect(run.violations).toEqual([])
    // The limiter refused permits (no request, and nothing the dispatcher records or counts) ...
    expect(run.history.events.filter((e) => e.kind === "rate-limit:rejected").length).toBeGreaterThan(0)
    // ... and the partner got each notification once, from both processes, never two within one window.
    const requests = run.history.events.filter((e) => e.kind === "partner-2xx")
    expect(new Set(requests.map((e) => e.data?.id)).size).toBe(6)
    expect(requests.length).toBe(6)
    expect(new Set(requests.map((e) => e.data?.node)).size).toBe(2)
    requests.slice(1).forEach((e, i) => expect(e.t - requests[i]!.t).toBeGreaterThanOrEqual(partnerRate.windowMillis - 1e-6))
  })


  checkOnlyCaughtBy([entry])
})

describe("a dispatch schedule a partner outage outlasts", () => {
  const simulation = Simulation.make({
    name: "short dispatch schedule",
    pipeline: pipeline({ dispatchSchedule: shortSchedule }),
    workload: { maxFaults: 2, maxChoices: 0, weights: only({ partner: 1 }) },
    ...shortScheduleChecks
  })

  it("the correct dispatcher gives a delivery up as exhausted after the schedule's attempts, and is judged by them", () => {
    const item = { key: 0, amount: 1, at: 0, spaced: false, poison: false }
    const run = Simulator.runScenario(simulation, {
      seed: 0,
      workload: [item, { ...item, key: 1, at: 20_000 }],
      faults: [{ kind: "partner", at: 0, ms: 10_000 }],
      choices: []
    })
    expect(run.violations).toEqual([])
    // The first notification fails through its whole schedule inside the outage: exhausted, once, after one
    // request per entry of the schedule; the second, after the outage, is delivered.
    const exhausted = run.history.events.filter((e) => e.kind === "dispatch-exhausted")
    expect(exhausted).toHaveLength(1)
    expect(exhausted[0]!.data?.attempts).toBe(shortSchedule.length)
    const failed = run.history.events.filter((e) => e.kind === "partner-unavailable" && e.data?.id === exhausted[0]!.data?.id)
    expect(failed).toHaveLength(shortSchedule.length)
    expect(run.history.events.filter((e) => e.kind === "partner-2xx")).toHaveLength(1)
  })

  it("generated partner outages exhaust deliveries in many runs, and every invariant holds", () => {
    const scenarios = fc.sample(Scenario.arbitrary(simulation.workload), { seed: 1, numRuns: 30 })
    let exhaustedRuns = 0
    for (const scenario of scenarios) {
      const run = Simulator.runScenario(simulation, scenario)
      expect(run.violations).toEqual([])
      if (run.history.events.some((e) => e.kind === "dispatch-exhausted")) exhaustedRuns++
    }
    // Real exhaustions to judge, not a few: the invariant is not vacuous under this schedule.
    expect(exhaustedRuns).toBeGreaterThanOrEqual(5)
  }, 300_000)
})

describe("the partner invariants judge what the partner and the dispatch store recorded", () => {
  const policy = { ...Simulation.defaultPolicy, ...partnerRateChecks.policy }
  const request = (t: number, id: string, sentAt?: number): Event => ({
    t,
    lane: "sender",
    kind: "partner-unavailable",
    ref: "w1",
    data: { id, status: 503, sentAt }
  })
  const judge = (invariant: Invariant.Invariant, events: ReadonlyArray<Event>) => {
    const history = new History(policy, () => 0)
    return events.map((e) => invariant.onEvent!(e, history)).filter((m) => m !== undefined)
  }

  it("exhausted after the schedule's attempts, an open breaker's among them, holds; after fewer requests, refused permits aside, it does not", () => {
    const exhausted = (breakerOpen: number, rateLimited: number): Event => ({
      t: 9_000,
      lane: "sender",
      kind: "dispatch-exhausted",
      ref: "w1",
      data: { id: "m1", endpoint: "partner", attempts: 4 + breakerOpen + rateLimited, rateLimited, breakerOpen }
    })
    const four = [0, 1_000, 2_000, 3_000].map((t) => request(t, "m1"))
    expect(judge(Invariant.webhookExhaustedAfterSchedule, [...four, request(4_000, "m2"), exhausted(2, 3)])).toEqual([])
    expect(judge(Invariant.webhookExhaustedAfterSchedule, [...four, request(4_000, "m2"), exhausted(1, 3)])).toEqual([
      "webhook m1 (w1) given up as exhausted after 4 request(s) to the partner and 1 held back by the breaker, fewer than the schedule's 6 attempts (3 permit(s) refused by the rate limit)"
    ])
  })

  it("a request held up by its sender's pause counts from when it left, in whatever order it arrives", () => {
    // Paced one a second; the first, held 1 ms at the send, arrives 999 ms before the next.
    expect(judge(Invariant.partnerRateLimit, [request(1_001, "m1", 1_000), request(2_000, "m2")])).toEqual([])
    // Held past a later request, it still shares a window with it.
    expect(judge(Invariant.partnerRateLimit, [request(1_500, "m2"), request(1_600, "m1", 1_000)])).toEqual([
      "2 requests reached the webhook partner between t=1000ms and t=1500ms, within one 1000 ms window (limit 1)"
    ])
    expect(judge(Invariant.partnerRateLimit, [request(0, "m1"), request(999, "m2")])).toHaveLength(1)
    expect(judge(Invariant.partnerRateLimit, [request(0, "m1"), request(1_000, "m2")])).toEqual([])
  })
})
