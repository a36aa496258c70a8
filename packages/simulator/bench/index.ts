/**
 * Simulator benchmark: scheduler-core events/s, end-to-end events/s and seeds/s of the realistic pipeline
 * (webhook → idempotent handler → outbox → consumer) through Effect fibers, and the seeds needed to find each
 * planted bug. CPU time (not wall time) is used for rates, since the machine may be shared.
 */
import { machine, writeResults } from "../../../bench/lib.js"
import { catalogue } from "../examples/catalogue.js"
import { simulation } from "../examples/reference.js"
import { VirtualScheduler } from "../src/Scheduler.js"
import * as Simulator from "../src/Simulator.js"

const cpuMs = (start: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(start)
  return (used.user + used.system) / 1000
}

// 1. Scheduler core: 1 000 simulated processes, each re-scheduling itself after a pseudo-random delay.
const schedulerCore = () => {
  const scheduler = new VirtualScheduler()
  const total = 2_000_000
  let fired = 0
  let x = 12345
  const tick = () => {
    fired++
    if (fired >= total) return scheduler.stop()
    x = (x * 1103515245 + 12345) & 0x7fffffff
    scheduler.schedule(x % 1000, tick)
  }
  for (let i = 0; i < 1000; i++) scheduler.schedule(i, tick)
  const start = process.cpuUsage()
  scheduler.run(Infinity)
  return fired / (cpuMs(start) / 1000)
}
schedulerCore() // warm-up
const coreRate = schedulerCore()

// 2. End to end: the reference pipeline under generated faults, through Effect fibers.
Simulator.check(simulation, { runs: 20, seed: 99 }) // warm-up
let events = 0
let seeds = 0
let virtualMs = 0
const e2eStart = process.cpuUsage()
const e2e = Simulator.check(simulation, {
  runs: 300,
  seed: 7,
  onRun: (run) => {
    events += run.events
    virtualMs += run.virtualTime
    seeds++
  }
})
const e2eCpu = cpuMs(e2eStart) / 1000
const e2eRate = events / e2eCpu
const seedsPerSecond = seeds / e2eCpu
const seedsPer10MinOn2Cores = Math.round(seedsPerSecond * 600 * 2)

// 3. Seeds until each planted bug is found (no shrinking), over several fast-check seeds; then one shrink.
const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}
const bugRows = catalogue.map((entry) => {
  const found: Array<number> = []
  let missed = 0
  for (const seed of [1, 2, 3, 4, 5]) {
    const r = Simulator.check(entry.wrong, { runs: 500, seed, shrink: false })
    if (r.valid) missed++
    else found.push(r.runs)
  }
  const start = performance.now()
  const shrunk = Simulator.check(entry.wrong, { runs: 500, seed: 1, timeLimit: 30_000 })
  return {
    bug: entry.id,
    "median seeds to find": found.length === 0 ? "not found" : median(found),
    "found in (of 5 seeds)": found.length,
    "missed (500 runs)": missed,
    "minimal counterexample size": shrunk.counterexample?.size ?? "-",
    "shrink wall s": ((performance.now() - start) / 1000).toFixed(1),
    invariant: shrunk.violations[0]?.invariant ?? "-"
  }
})

writeResults(
  "simulator",
  "Simulator: virtual-time throughput and planted-bug detection",
  [
    { measurement: "scheduler core (timed events, no fibers)", "events/s (CPU)": Math.round(coreRate), goal: "≥ 100,000" },
    { measurement: "end to end through Effect fibers (reference pipeline, 300 seeds)", "events/s (CPU)": Math.round(e2eRate), goal: "≥ 10,000" },
    {
      measurement: "seeds of the reference pipeline",
      "seeds/s (1 core, CPU)": seedsPerSecond.toFixed(1),
      "extrapolated seeds / 10 min on 2 cores": seedsPer10MinOn2Cores,
      goal: "≥ 10,000"
    },
    ...bugRows
  ],
  [
    `Reference pipeline: ${seeds} seeds, ${events} scheduler events (timed events + fiber tasks), ${Math.round(virtualMs / seeds)} virtual ms per seed on average; valid: ${e2e.valid}.`,
    "Rates are per CPU second of this process, so they approximate an idle core even when the machine is busy.",
    "Seeds per 10 minutes on 2 cores = seeds/s × 600 × 2, i.e. two processes each running their own seeds.",
    "Median seeds to find = fast-check runs until the first failing scenario, over fast-check seeds 1..5, without shrinking.",
    `Machine: ${machine().cpu}.`
  ]
)
