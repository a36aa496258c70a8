/**
 * Runs simulations: one scenario deterministically ({@link runScenario}), many generated scenarios with
 * fast-check shrinking the whole run to a minimal counterexample ({@link check}), or a recorded failure again
 * by seed and path ({@link replay}). Answers a Jepsen-style {@link Report}.
 */
import { Observe } from "@bulwark/core"
import * as Signing from "@bulwark/webhook/Signing"
import { Duration, Effect } from "effect"
import * as fc from "fast-check"
import { formatEvent, History, type Violation } from "./History.js"
import type { Final } from "./Invariant.js"
import * as Scenario from "./Scenario.js"
import { epoch, runProgram, VirtualScheduler } from "./Scheduler.js"
import type { Simulation } from "./Simulation.js"
import { World, type WebhookRequest } from "./World.js"

/** Jepsen-style counts of one run (or summed over runs). */
export interface Stats {
  /** Messages the sender tried to deliver. */
  attempted: number
  /** Messages the ingress acknowledged (2xx). */
  acknowledged: number
  /** Messages whose downstream effect was applied. */
  applied: number
  /** Acknowledged messages found nowhere at the end. */
  lost: number
  /** Effects for messages nobody sent. */
  unexpected: number
  /** Messages whose effect was applied more than once. */
  duplicated: number
  /** Deliveries beyond the first of each transport message (expected under at-least-once). */
  duplicateDeliveries: number
  /** Messages dead-lettered. */
  deadLettered: number
  /** Messages not final at the end. */
  pending: number
}

/** The outcome of one scenario. */
export interface RunResult {
  readonly valid: boolean
  readonly violations: ReadonlyArray<Violation>
  readonly stats: Stats
  readonly pending: ReadonlyMap<string, string>
  readonly history: History
  /** The simulated processes: steps taken and crashes suffered. */
  readonly nodes: ReadonlyArray<{ readonly name: string; readonly steps: number; readonly crashes: number }>
  /** Virtual ms at which the run ended. */
  readonly virtualTime: number
  /** Scheduler events (timed events plus fiber tasks). */
  readonly events: number
  readonly traceHash: string
}

const emptyStats = (): Stats => ({
  attempted: 0,
  acknowledged: 0,
  applied: 0,
  lost: 0,
  unexpected: 0,
  duplicated: 0,
  duplicateDeliveries: 0,
  deadLettered: 0,
  pending: 0
})

const refOf = (index: number) => `w${index}`

/** The JSON body the simulated provider sends for a work item (spaced bodies differ from a re-serialisation). */
export const bodyOf = (simulation: Simulation, item: Scenario.WorkItem, index: number): string => {
  const payload = simulation.body(item, refOf(index))
  return item.spaced ? JSON.stringify(payload, null, 2) : JSON.stringify(payload)
}

const encoder = new TextEncoder()

/** The Standard Webhooks id the simulated provider gives a work item (stable across its retries). */
export const webhookIdOf = (index: number): string => `msg_${refOf(index)}`

const forgedSignature = `v1,${Buffer.alloc(32).toString("base64")}`

/** Runs one scenario of a simulation, deterministically. */
export const runScenario = (simulation: Simulation, scenario: Scenario.Scenario): RunResult => {
  const scheduler = new VirtualScheduler(scenario.choices)
  const history = new History(simulation.policy, () => scheduler.now)
  const window = simulation.faultWindow
  const deadline = window + simulation.livenessBound
  const world = new World(scheduler, history, scenario.faults, {
    ...simulation.world,
    faultWindow: window,
    // A stall ends in time for the pipeline to finish its work within the liveness bound.
    stallsEndBy: window + simulation.livenessBound / 2
  })
  scenario.workload.forEach((item, i) => {
    if (item.poison) {
      world.poison.add(refOf(i))
      history.poison.add(refOf(i))
    }
  })
  const tolerance = simulation.policy.webhookTolerance
  const violate = (invariant: string, message: string) => {
    history.violations.push({ invariant, message, at: scheduler.now })
    scheduler.stop()
  }
  history.observers.push((event) => {
    if (history.violations.length > 0) return
    for (const invariant of simulation.invariants) {
      const message = invariant.onEvent?.(event, history)
      if (message !== undefined) return violate(invariant.name, message)
    }
  })

  const lastStatus = new Map<string, number>()

  // The provider signs with the real Standard Webhooks signer, at its own (unskewed) clock.
  const signed = (id: string, body: Uint8Array) =>
    Effect.map(
      Effect.orDie(Signing.standard([world.secret], { id, body, timestamp: Math.floor((epoch + scheduler.now) / 1000) })),
      (headers): WebhookRequest => ({ body, headers: { ...headers, "content-type": "application/json" } })
    )

  // An attacker or network replaying a captured request; authentic only while it is within the tolerance.
  let replaysOutstanding = 0
  const replayRequest = (post: Post, request: WebhookRequest, ref: string, sentAt: number, after: number) =>
    Effect.gen(function*() {
      replaysOutstanding++
      yield* Effect.sleep(Duration.millis(after))
      replaysOutstanding--
      history.fault("replay", ref, { after })
      // Fresh or not when it reached the receiver, which checks it then: a receiver paused after its checks (a
      // stall) answers later, and that answer is no later acceptance of a stale request.
      const arrivedAt = scheduler.now
      const status = yield* post(request)
      if (status >= 200 && status < 300) {
        const fresh = arrivedAt - sentAt <= tolerance
        history.record("webhook", "accepted", ref, fresh ? { authentic: true, replay: true, status } : { authentic: false, why: "out-of-window replayed", status })
      }
    })

  const send = (post: Post, item: Scenario.WorkItem, index: number) =>
    Effect.gen(function*() {
      const ref = refOf(index)
      const body = encoder.encode(bodyOf(simulation, item, index))
      yield* Effect.sleep(Duration.millis(item.at))
      history.attempted.add(ref)
      for (let attempt = 1;; attempt++) {
        const request = yield* signed(webhookIdOf(index), body)
        const faults = world.faultsAt("webhook")
        let sent = request
        if (faults.some((f) => f.kind === "corrupt")) {
          const bytes = Uint8Array.from(body)
          bytes[bytes.length - 2] = bytes[bytes.length - 2]! ^ 0x01
          sent = { ...request, body: bytes }
          history.fault("corrupt", ref)
        }
        for (const fault of faults) {
          if (fault.kind === "replay") yield* Effect.forkScoped(replayRequest(post, request, ref, scheduler.now, fault.after))
        }
        history.record("sender", "send", ref, { attempt })
        const status = yield* post(sent)
        lastStatus.set(ref, status)
        if (status >= 200 && status < 300) {
          history.record("webhook", "accepted", ref, sent === request ? { authentic: true, status } : { authentic: false, why: "corrupted", status })
          history.acknowledged.add(ref)
          return
        }
        history.record("sender", "rejected", ref, { status })
        yield* Effect.sleep(Duration.millis(Math.min(5_000, 500 * 2 ** (attempt - 1))))
      }
    })

  const forge = (post: Post, at: number, n: number) =>
    Effect.gen(function*() {
      yield* Effect.sleep(Duration.millis(at))
      const ref = `forged-${n}`
      const body = encoder.encode(JSON.stringify(simulation.body({ key: 0, amount: 1_000_000, at, spaced: false, poison: false }, ref)))
      history.fault("forge", ref)
      const request = yield* signed(`msg_${ref}`, body)
      const status = yield* post({ ...request, headers: { ...request.headers, "webhook-signature": forgedSignature } })
      if (status >= 200 && status < 300) history.record("webhook", "accepted", ref, { authentic: false, why: "forged", status })
    })

  const program = Effect.scoped(Effect.gen(function*() {
    yield* world.init
    const baseClock = yield* Effect.clock
    const receiverClock = world.skewedClock(baseClock, epoch)
    const ingressNode = yield* world.spawn("ingress", Effect.never)
    const ingress = yield* simulation.pipeline(world)
    const post: Post = (request) =>
      world.serve(ingressNode, ingress(request).pipe(Effect.withClock(receiverClock), Effect.provide(world.context)), 0)
    for (let i = 0; i < scenario.workload.length; i++) yield* Effect.forkScoped(send(post, scenario.workload[i]!, i))
    let forged = 0
    for (const fault of scenario.faults) {
      if (fault.kind === "forge" && fault.at < window) yield* Effect.forkScoped(forge(post, fault.at, forged++))
    }
    return yield* Effect.never
  })).pipe(Observe.observe(world.observer))

  const isFinal = (ref: string) => history.applied("downstream", ref) > 0 || history.deadLettered.has(ref)
  const pendingMap = (): Map<string, string> => {
    const pending = new Map<string, string>()
    const lastEvent = new Map<string, string>()
    for (const event of history.events) if (event.ref !== undefined) lastEvent.set(event.ref, formatEvent(event).trim())
    // With every queue and the outbox empty, an accepted message that is not final is nowhere: lost, not
    // pending. While something is still queued it may be that message.
    const queued = world.pendingMessages() + world.outboxBacklog()
    scenario.workload.forEach((_, i) => {
      const ref = refOf(i)
      if (isFinal(ref)) return
      if (!history.acknowledged.has(ref)) {
        const status = lastStatus.get(ref)
        pending.set(ref, status === undefined ? "not yet sent" : `not accepted by the webhook receiver (last status ${status})`)
      } else if (queued > 0) {
        pending.set(ref, `${queued} message(s) still queued or in the outbox; last seen: ${lastEvent.get(ref) ?? "nothing after acceptance"}`)
      }
    })
    return pending
  }
  // Nothing can happen any more once every message is final (a healthy message only once applied), nothing
  // is queued, every process is up, and no timed fault, send or replay is still to come: the run may end
  // before the liveness deadline.
  const lastScheduled = Math.min(window, Math.max(
    0,
    ...scenario.workload.map((w) => w.at),
    ...scenario.faults.map((f) => ("at" in f ? f.at : 0))
  ))
  const quiescent = (): boolean => {
    if (replaysOutstanding > 0 || scheduler.now < lastScheduled) return false
    for (let i = 0; i < scenario.workload.length; i++) {
      const ref = refOf(i)
      if (!(history.applied("downstream", ref) > 0 || (history.deadLettered.has(ref) && history.poison.has(ref)))) return false
    }
    if (world.nodes.some((node) => !node.up)) return false
    return world.pendingMessages() === 0 && world.outboxBacklog() === 0 && world.outstandingWebhooks() === 0 &&
      simulation.quiescent(world)
  }
  let nextCheck = 0
  const result = runProgram(scheduler, program, {
    seed: scenario.seed,
    until: deadline,
    beforeSleep: world.step,
    onAdvance: (now) => {
      if (now >= nextCheck) {
        nextCheck = now + 250
        if (quiescent()) scheduler.stop()
      }
    },
    beforeInterrupt: () => {
      history.frozen = true
    }
  })
  if (scheduler.livelock !== undefined && history.violations.length === 0) {
    history.violations.push({
      invariant: "progress",
      message: `livelock: ${scheduler.maxEventsPerInstant} events at t=${scheduler.livelock}ms without virtual time moving (a fiber spins)`,
      at: scheduler.livelock
    })
  }
  if (result.exit !== undefined && result.exit._tag === "Failure" && history.violations.length === 0) {
    history.violations.push({ invariant: "pipeline-runs", message: `the pipeline failed: ${String(result.exit.cause)}`, at: result.now })
  }
  const pending = pendingMap()
  if (history.violations.length === 0) {
    const final: Final = { history, pending, endedAt: result.now, deadline }
    for (const invariant of simulation.invariants) {
      const message = invariant.atEnd?.(final)
      if (message !== undefined) {
        history.violations.push({ invariant: invariant.name, message, at: result.now })
        break
      }
    }
  }
  return {
    valid: history.violations.length === 0,
    violations: [...history.violations],
    stats: statsOf(history, scenario, pending),
    pending,
    history,
    nodes: world.nodes.map((node) => ({ name: node.name, steps: node.steps, crashes: node.crashes })),
    virtualTime: result.now,
    events: result.events,
    traceHash: history.traceHash
  }
}

/** How the provider posts a request to the receiver: the HTTP status, 0 when no answer came back. */
type Post = (request: WebhookRequest) => Effect.Effect<number>

const statsOf = (history: History, scenario: Scenario.Scenario, pending: ReadonlyMap<string, string>): Stats => {
  const stats = emptyStats()
  stats.attempted = history.attempted.size
  stats.acknowledged = history.acknowledged.size
  const downstream = history.effects.get("downstream") ?? new Map<string, number>()
  for (const [ref, n] of downstream) {
    if (/^w\d+$/.test(ref)) stats.applied++
    else stats.unexpected++
    if (n > 1) stats.duplicated++
  }
  for (const [name, perRef] of history.effects) {
    if (name === "downstream") continue
    for (const [ref, n] of perRef) if (n > 1 && (downstream.get(ref) ?? 0) <= 1) stats.duplicated++
  }
  for (const n of history.deliveries.values()) stats.duplicateDeliveries += n - 1
  stats.deadLettered = [...history.deadLettered.keys()].filter((ref) => /^w\d+$/.test(ref)).length
  stats.pending = pending.size
  scenario.workload.forEach((_, i) => {
    const ref = refOf(i)
    if (history.acknowledged.has(ref) && (downstream.get(ref) ?? 0) === 0 && !history.deadLettered.has(ref) && !pending.has(ref)) {
      stats.lost++
    }
  })
  return stats
}

/** The per-message timeline of a run: for each message, its events in order. */
export const messageTimeline = (run: RunResult): ReadonlyArray<string> => {
  const byRef = new Map<string, Array<string>>()
  for (const event of run.history.events) {
    if (event.ref === undefined) continue
    const lines = byRef.get(event.ref) ?? []
    lines.push(formatEvent(event))
    byRef.set(event.ref, lines)
  }
  const out: Array<string> = []
  for (const [ref, lines] of [...byRef].sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }))) {
    const state = run.history.applied("downstream", ref) > 0
      ? "applied"
      : run.history.deadLettered.has(ref)
      ? `dead-lettered (${run.history.deadLettered.get(ref)})`
      : run.pending.has(ref)
      ? `pending: ${run.pending.get(ref)}`
      : "never accepted"
    out.push(`${ref} — ${state}`, ...lines.map((l) => `  ${l}`))
  }
  return out
}

/** The whole trace of a run, one event per line. */
export const trace = (run: RunResult): ReadonlyArray<string> => run.history.events.map(formatEvent)

/** The Jepsen-style report of a check. */
export interface Report {
  readonly simulation: string
  /** True when every invariant held in every run. */
  readonly valid: boolean
  /** The fast-check seed of the check. */
  readonly seed: number
  /** fast-check's path to the shrunk counterexample (with the seed, replays it). */
  readonly path?: string
  /** Scenarios run (for a failure: until the first failure, before shrinking). */
  readonly runs: number
  /** Successful shrink steps. */
  readonly shrinks: number
  /** Counts: summed over all runs when valid, of the minimal counterexample otherwise. */
  readonly stats: Stats
  readonly violations: ReadonlyArray<Violation>
  /** Fault kinds and crash sites that fired, across every run of the check. */
  readonly faultsInjected: Readonly<Record<string, number>>
  /** Simulated processes (by name) that never crashed in any run of the check: their crash paths went untested. */
  readonly processesNeverCrashed: ReadonlyArray<string>
  /**
   * Invariants no run of the check gave anything to judge (no breaker event for the breaker invariants, no
   * retry for the retry ones, …): they held, but vacuously.
   */
  readonly vacuous: ReadonlyArray<string>
  readonly counterexample?: {
    readonly scenario: Scenario.Scenario
    /** Messages + faults + choices. */
    readonly size: number
    readonly traceHash: string
    readonly virtualTime: number
    readonly events: number
    readonly timeline: ReadonlyArray<string>
    readonly trace: ReadonlyArray<string>
  }
  /** One line that replays the counterexample. */
  readonly replay?: string
}

/** Options of {@link check}. */
export interface CheckOptions {
  /** Scenarios to try. Default 100. */
  readonly runs?: number
  /** fast-check seed; default a fresh one (printed in the report). */
  readonly seed?: number
  /** fast-check path to replay one recorded counterexample. */
  readonly path?: string
  /** The module the simulation came from, for the printed replay command. */
  readonly module?: string
  /** Stops searching and shrinking after this many real ms, keeping the smallest counterexample so far. */
  readonly timeLimit?: number
  /**
   * Scenarios fast-check may try while shrinking; past it the smallest failure so far is kept. Unlike
   * `timeLimit` the result does not depend on the machine's speed. Default unbounded.
   */
  readonly shrinkBudget?: number
  /** Shrink a failure to a minimal counterexample. Default true; false stops at the first failing scenario. */
  readonly shrink?: boolean
  /** Called after every scenario (progress bars). */
  readonly onRun?: (run: RunResult, index: number) => void
}

/** Runs generated scenarios; on a violation fast-check shrinks workload, faults and interleaving together. */
export const check = (simulation: Simulation, options: CheckOptions = {}): Report => {
  const checker = makeChecker(simulation, options)
  return checker.finish(fc.check(fc.property(checker.arbitrary, checker.predicate), checker.parameters))
}

/**
 * {@link check}, giving the event loop a turn before each scenario: a long check in a test or a server does
 * not starve timers and I/O (a test runner's worker must still answer its supervisor).
 */
export const checkAsync = async (simulation: Simulation, options: CheckOptions = {}): Promise<Report> => {
  const checker = makeChecker(simulation, options)
  const yieldTurn = () => new Promise<void>((resume) => setImmediate(resume))
  const property = fc.asyncProperty(checker.arbitrary, async (scenario) => {
    await yieldTurn()
    return checker.predicate(scenario)
  })
  return checker.finish(await fc.check(property, checker.parameters))
}

const makeChecker = (simulation: Simulation, options: CheckOptions) => {
  const faults = new Map<string, number>()
  const total = emptyStats()
  let index = 0
  let shrinkRuns = -1
  // The invariant that failed first: shrinking keeps only candidates that fail the same one, so the
  // counterexample reported is a minimal example of that failure, not of whichever broke last.
  let failing: string | undefined
  const budget = options.shrinkBudget ?? Infinity
  const judged = new Set<string>()
  const relevant = simulation.invariants.filter((invariant) => invariant.relevant !== undefined)
  const crashedNodes = new Set<string>()
  const nodeNames = new Set<string>()
  const arbitrary = Scenario.arbitrary({ ...simulation.workload, faultWindow: simulation.faultWindow })
  const predicate = (scenario: Scenario.Scenario): boolean => {
    // Once the budget is spent, every further candidate "passes", so fast-check keeps the smallest failure so far.
    if (shrinkRuns >= 0 && ++shrinkRuns > budget) return true
    const run = runScenario(simulation, scenario)
    if (!run.valid && shrinkRuns < 0) {
      shrinkRuns = 0
      failing = run.violations[0]!.invariant
    }
    if (shrinkRuns < 0) {
      for (const invariant of relevant) {
        if (judged.has(invariant.name)) continue
        if (run.history.events.some(invariant.relevant!)) judged.add(invariant.name)
      }
      for (const node of run.nodes) {
        nodeNames.add(node.name)
        if (node.crashes > 0) crashedNodes.add(node.name)
      }
    }
    for (const [kind, n] of run.history.faults) faults.set(kind, (faults.get(kind) ?? 0) + n)
    if (run.valid) for (const key of Object.keys(total) as Array<keyof Stats>) total[key] += run.stats[key]
    options.onRun?.(run, index++)
    if (failing !== undefined && !run.valid) return run.violations[0]!.invariant !== failing
    return run.valid
  }
  const parameters: fc.Parameters<[Scenario.Scenario]> = {
    numRuns: options.runs ?? 100,
    ...(options.seed === undefined ? {} : { seed: options.seed }),
    ...(options.shrink === false ? { endOnFailure: true } : {}),
    // A recorded path is already shrunk: replay exactly it.
    ...(options.path === undefined ? {} : { path: options.path, endOnFailure: true }),
    ...(options.timeLimit === undefined ? {} : { interruptAfterTimeLimit: options.timeLimit, markInterruptAsFailure: false })
  }
  const finish = (details: fc.RunDetails<[Scenario.Scenario]>): Report => {
    const faultsInjected = Object.fromEntries([...faults].sort(([a], [b]) => a.localeCompare(b)))
    const processesNeverCrashed = [...nodeNames].filter((name) => !crashedNodes.has(name)).sort()
    const vacuous = relevant.filter((invariant) => !judged.has(invariant.name)).map((invariant) => invariant.name)
    if (!details.failed) {
      return {
        simulation: simulation.name,
        valid: true,
        seed: details.seed,
        runs: details.numRuns,
        shrinks: 0,
        stats: total,
        violations: [],
        faultsInjected,
        processesNeverCrashed,
        vacuous
      }
    }
    if (details.counterexample === null) {
      const error: unknown = details.errorInstance
      return {
        simulation: simulation.name,
        valid: false,
        seed: details.seed,
        runs: details.numRuns,
        shrinks: details.numShrinks,
        stats: emptyStats(),
        violations: [{ invariant: "simulator", message: `the check could not complete: ${error instanceof Error ? error.message : String(error)}`, at: 0 }],
        faultsInjected,
        processesNeverCrashed,
        vacuous
      }
    }
    const scenario = details.counterexample[0]
    const run = runScenario(simulation, scenario)
    const path = details.counterexamplePath ?? undefined
    return {
      simulation: simulation.name,
      valid: false,
      seed: details.seed,
      ...(path === undefined ? {} : { path }),
      runs: details.numRuns,
      shrinks: details.numShrinks,
      stats: run.stats,
      violations: run.violations,
      faultsInjected,
      processesNeverCrashed,
      vacuous,
      counterexample: {
        scenario,
        size: Scenario.size(scenario),
        traceHash: run.traceHash,
        virtualTime: run.virtualTime,
        events: run.history.events.length,
        timeline: messageTimeline(run),
        trace: trace(run)
      },
      replay: `bulwark simulate ${options.module ?? "<module>"} --seed ${details.seed}${path === undefined ? "" : ` --path "${path}"`}`
    }
  }
  return { arbitrary, predicate, parameters, finish }
}

/** Replays a recorded counterexample by seed and path (runs exactly that scenario, already shrunk). */
export const replay = (simulation: Simulation, options: { readonly seed: number; readonly path: string; readonly module?: string }): Report =>
  check(simulation, options)

/** A vitest regression test that replays a counterexample and expects every invariant to hold. */
export const regressionTest = (report: Report, importPath: string, exportName = "simulation"): string => {
  if (report.counterexample === undefined) return ""
  return [
    `// Regression test exported by the Bulwark simulator for "${report.simulation}".`,
    `// Violation: ${report.violations.map((v) => `${v.invariant}: ${v.message}`).join("; ")}`,
    `import { Simulator } from "@bulwark/simulator"`,
    `import { describe, expect, it } from "vitest"`,
    `import { ${exportName} } from ${JSON.stringify(importPath)}`,
    ``,
    `const scenario = ${JSON.stringify(report.counterexample.scenario, null, 2)}`,
    ``,
    `describe(${JSON.stringify(`${report.simulation} regression`)}, () => {`,
    `  it("keeps every invariant on the recorded counterexample", () => {`,
    `    const run = Simulator.runScenario(${exportName}, scenario)`,
    `    expect(run.violations).toEqual([])`,
    `  })`,
    `})`,
    ``
  ].join("\n")
}
