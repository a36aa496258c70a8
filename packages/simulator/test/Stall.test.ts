/**
 * The `stall` fault (a whole process paused, memory kept) and the two invariants it showed to be imprecise:
 * `retry-within-policy` counted a `duplicate` fault's copies as redeliveries, and `webhook-delivered-once`
 * called a sender's retry a duplicate when the sender never heard the first 2xx (it gave up waiting for it).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { simulation as docs } from "../../../docs/snippets/simulation.js"
import { catalogue } from "../examples/catalogue.js"
import { History } from "../src/History.js"
import * as Invariant from "../src/Invariant.js"
import type { Scenario } from "../src/Scenario.js"
import { runProgram, VirtualScheduler } from "../src/Scheduler.js"
import * as Simulator from "../src/Simulator.js"
import { World } from "../src/World.js"

const oneMessage = (faults: Scenario["faults"]): Scenario => ({
  seed: 1,
  workload: [{ key: 0, amount: 1, at: 0, spaced: false, poison: false }, { key: 0, amount: 2, at: 10, spaced: false, poison: false }],
  faults,
  choices: []
})

describe("stall fault", () => {
  it("pauses the whole process from the step it hits until the pause ends; other processes go on", () => {
    const run = Simulator.runScenario(docs, oneMessage([{ kind: "stall", node: 0, step: 1, ms: 30_000 }]))
    const events = run.history.events
    const stall = events.find((e) => e.lane === "fault" && e.kind === "stall")!
    expect(stall.data).toMatchObject({ node: "ingress", step: 1, ms: 30_000 })
    // The stalled ingress answers its requests only once the pause is over, and the messages are then delivered.
    const accepted = events.filter((e) => e.kind === "accepted")
    expect(accepted.length).toBeGreaterThan(0)
    for (const e of accepted) expect(e.t).toBeGreaterThanOrEqual(stall.t + 30_000)
    expect(run.virtualTime).toBeGreaterThanOrEqual(30_000)
    expect(run.violations).toEqual([])
    expect(run.stats.applied).toBe(2)
  })

  it("ends by half the liveness bound after the fault window, however long it was drawn", () => {
    const run = Simulator.runScenario(docs, oneMessage([{ kind: "stall", node: 0, step: 1, ms: 10_000_000 }]))
    const stall = run.history.events.find((e) => e.lane === "fault" && e.kind === "stall")!
    expect(stall.t + Number(stall.data?.ms)).toBe(docs.faultWindow + docs.livenessBound / 2)
    expect(run.violations).toEqual([])
  })

  it("ends with a crash: the process that comes back is not paused", () => {
    // The ingress is paused at its second step for a minute; its third step (the second request, taken while
    // paused) crashes it, and it is back 100 ms later: the sender's retries are accepted long before the minute.
    const run = Simulator.runScenario(docs, oneMessage([
      { kind: "stall", node: 0, step: 1, ms: 60_000 },
      { kind: "crash", node: 0, step: 2, down: 100 }
    ]))
    const crash = run.history.events.find((e) => e.lane === "fault" && e.kind === "crash")!
    expect(crash).toBeDefined()
    const accepted = run.history.events.filter((e) => e.kind === "accepted")
    expect(accepted.length).toBeGreaterThan(0)
    expect(Math.min(...accepted.map((e) => e.t))).toBeLessThan(60_000)
    expect(run.violations).toEqual([])
  })

  it("replays exactly: the same scenario gives the same trace", () => {
    const scenario = oneMessage([{ kind: "stall", node: 1, step: 2, ms: 45_000 }, { kind: "duplicate", nth: 0, copies: 2 }])
    expect(Simulator.runScenario(docs, scenario).traceHash).toBe(Simulator.runScenario(docs, scenario).traceHash)
  })
})

describe("found by the stall fault in @bulwark/webhook", () => {
  it("webhook-delivered-once: a dispatcher paused between its claim and its request sent after its lease ran out, and the worker that had taken the delivery over had already delivered it", () => {
    // dispatcher-1 claims, is paused 25 s before resolving the address (lease 20 s); dispatcher-2 takes the
    // delivery over at 21 s and delivers it; dispatcher-1 wakes at 26 s. It must not send its stale claim.
    const scenario: Scenario = {"seed": 0, "workload": [{"key": 0, "amount": 1, "at": 0, "spaced": false, "poison": false}], "faults": [{"kind": "stall", "node": 8, "step": 4, "ms": 25_000}, {"kind": "stall", "node": 1, "step": 4, "ms": 25_750}], "choices": []}
    const run = Simulator.runScenario(catalogue.find((e) => e.id === "no-dedupe")!.twin, scenario)
    expect(run.history.events.filter((e) => e.kind === "partner-2xx")).toHaveLength(1)
    expect(run.violations).toEqual([])
  }, 300_000)
})

describe("retry-within-policy", () => {
  const history = new History(docs.policy, () => 0)
  const deliver = (seen: number, copies: number | undefined) =>
    Invariant.retryWithinPolicy.onEvent!({
      t: 0,
      lane: "transport",
      kind: "deliver",
      ref: "w1",
      data: { topic: "payments", group: "g", seen, attempt: 3, copies }
    }, history)

  it("does not count the copies a duplicate fault injected as redeliveries", () => {
    expect(deliver(docs.policy.maxDeliveries + 3, 3)).toBeUndefined()
  })

  it("still counts every redelivery beyond the policy", () => {
    expect(deliver(docs.policy.maxDeliveries + 1, undefined)).toContain(`policy ${docs.policy.maxDeliveries}`)
    expect(deliver(docs.policy.maxDeliveries + 4, 3)).toContain("besides 3 injected copies")
  })
})

describe("webhook-delivered-once: the partner's record of who heard a 2xx", () => {
  const post = (world: World) =>
    world.egress.post({
      url: new URL("https://partner.example/hooks"),
      headers: { "webhook-id": "msg_1" },
      body: new TextEncoder().encode(JSON.stringify({ data: { ref: "w1" } })),
      address: { address: "93.184.215.14", family: 4 },
      excerptBytes: 0
    })
  const partnerAnswers = (program: (world: World) => Effect.Effect<unknown, unknown>, faults: Scenario["faults"] = []) => {
    const scheduler = new VirtualScheduler()
    const history = new History(docs.policy, () => scheduler.now)
    const world = new World(scheduler, history, faults, { faultWindow: 100_000, partnerLatency: 20 })
    runProgram(scheduler, program(world), { seed: 1, until: Infinity })
    return history.events.filter((e) => e.kind === "partner-2xx").map((e) => e.data?.excused)
  }

  it("a retry after the sender gave up waiting for the first 2xx is excused", () => {
    const excused = partnerAnswers((world) =>
      Effect.zipRight(Effect.ignore(Effect.timeout(post(world), "10 millis")), post(world))
    )
    expect(excused).toEqual([true, true])
  })

  it("a send after the sender heard the 2xx is not", () => {
    expect(partnerAnswers((world) => Effect.zipRight(post(world), post(world)))).toEqual([true, false])
  })

  it("a second send while the first is still in flight is not", () => {
    expect(partnerAnswers((world) => Effect.all([post(world), post(world)], { concurrency: 2 }))).toEqual([true, false])
  })

  it("a send by another process while the process that heard the first 2xx is paused is excused (to others it is as good as dead)", () => {
    // The first process hears its 2xx, then stalls at its next step, its second send, which goes out when the
    // pause is over (held up at the send itself: excused); the second process sends during the pause (excused),
    // and a third once everyone is awake (not excused).
    const excused = partnerAnswers((world) =>
      Effect.scoped(Effect.gen(function*() {
        yield* world.spawn("first", Effect.zipRight(post(world), post(world)))
        yield* Effect.sleep("1 second")
        yield* world.spawn("second", post(world))
        yield* Effect.sleep("1 minute")
        yield* world.spawn("third", post(world))
        yield* Effect.sleep("1 second")
      })), [{ kind: "stall", node: 0, step: 1, ms: 30_000 }])
    expect(excused).toEqual([true, true, true, false])
  })

  it("the invariant judges what the partner recorded", () => {
    const history = new History(docs.policy, () => 0)
    const event = (excused: boolean) => ({
      t: 0,
      lane: "sender" as const,
      kind: "partner-2xx",
      ref: "w1",
      data: { id: "msg_1", count: 2, excused }
    })
    expect(Invariant.webhookDeliveredOnce.onEvent!(event(true), history)).toBeUndefined()
    expect(Invariant.webhookDeliveredOnce.onEvent!(event(false), history)).toContain("delivered 2 times")
  })
})
