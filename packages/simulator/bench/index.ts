/**
 * Simulator benchmark, on the real packages:
 * - 1,000 runs of the flagship simulation (the payments example: webhook → orders with outbox → relay →
 *   shipping → downstream, with dead-letter drain and replay), split over two processes (2 cores), wall time;
 * - a found bug shrunk: wall time from the check's start to the shrunk counterexample;
 * - every mutant of the packages and every wrong pipeline: median scenarios to find over fast-check seeds
 *   1–5 (no shrinking), the invariant that caught it and the shrunk counterexample's size.
 * The scheduler core's rate is kept as a baseline of the virtual-time machinery itself.
 */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { machine, writeResults } from "../../../bench/lib.js"
import { catalogue } from "../examples/catalogue.js"
import { VirtualScheduler } from "../src/Scheduler.js"
import * as Simulator from "../src/Simulator.js"
import { mutants } from "../test/mutants/catalogue.js"
import { pool, runMutant } from "../test/mutants/mutation.js"

const cpuMs = (start: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(start)
  return (used.user + used.system) / 1000
}

// 0. Worker mode: `index.ts flagship <seed> <runs>` runs the flagship check and prints its figures.
if (process.argv[2] === "flagship") {
  const { simulation } = await import("../../../examples/payments/test/payments.simulation.js")
  const started = performance.now()
  const report = Simulator.check(simulation, { runs: Number(process.argv[4]), seed: Number(process.argv[3]) })
  process.stdout.write(JSON.stringify({ valid: report.valid, runs: report.runs, ms: performance.now() - started }) + "\n")
  process.exit(0)
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
schedulerCore()
const coreRate = schedulerCore()

// 2. The flagship: 1,000 runs over two processes.
const self = fileURLToPath(import.meta.url)
const worker = (seed: number, runs: number) =>
  new Promise<{ valid: boolean; runs: number; ms: number }>((done, fail) => {
    const child = spawn(process.execPath, ["--conditions=@bulwark/source", "--import", "tsx", self, "flagship", String(seed), String(runs)], { stdio: ["ignore", "pipe", "inherit"] })
    let out = ""
    child.stdout.on("data", (chunk) => (out += chunk))
    child.on("close", (code) => code === 0 ? done(JSON.parse(out.trim().split("\n").pop()!)) : fail(new Error(`worker exited ${code}`)))
  })
const flagshipStart = performance.now()
const halves = await Promise.all([worker(1001, 500), worker(1002, 500)])
const flagshipWall = (performance.now() - flagshipStart) / 1000

// 3. A found bug, shrunk.
const ack = catalogue.find((entry) => entry.id === "ack-before-processing")!
const shrinkStart = performance.now()
const shrunk = Simulator.check(ack.wrong, { runs: 300, seed: 1, shrinkBudget: 400 })
const shrinkWall = (performance.now() - shrinkStart) / 1000

// 4. Mutants (each in its own process) and wrong pipelines: scenarios to find, over seeds 1..5.
const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}
const seeds = [1, 2, 3, 4, 5]
const mutantRows = await pool(mutants, 2, async (mutant) => {
  const finds = await Promise.all(seeds.map((seed) => runMutant(mutant, seed, 300, "find")))
  const found = finds.filter((o) => o.caught).map((o) => o.scenariosToFind)
  const one = await runMutant(mutant, 1, 300)
  return {
    kind: "mutant",
    id: mutant.id,
    "caught by": one.invariant ?? "not caught",
    "median scenarios to find": found.length === 0 ? "not found" : median(found),
    "found (of 5 seeds)": found.length,
    "shrunk size": one.size ?? "-",
    "find + shrink s": ((one.findMillis + one.shrinkMillis) / 1000).toFixed(1)
  }
})
const pipelineRows = catalogue.map((entry) => {
  const found: Array<number> = []
  for (const seed of seeds) {
    const r = Simulator.check(entry.wrong, { runs: 300, seed, shrink: false })
    if (!r.valid) found.push(r.runs)
  }
  const start = performance.now()
  const one = Simulator.check(entry.wrong, { runs: 300, seed: 1, shrinkBudget: 400 })
  return {
    kind: "wrong pipeline",
    id: entry.id,
    "caught by": one.violations[0]?.invariant ?? "not caught",
    "median scenarios to find": found.length === 0 ? "not found" : median(found),
    "found (of 5 seeds)": found.length,
    "shrunk size": one.counterexample?.size ?? "-",
    "find + shrink s": ((performance.now() - start) / 1000).toFixed(1)
  }
})

writeResults(
  "simulator",
  "Simulator on the real packages: speed, shrinking, mutants and wrong pipelines caught",
  [
    { measurement: "scheduler core (timed events, no fibers), events/s (CPU)", figure: Math.round(coreRate), goal: "≥ 100,000" },
    {
      measurement: "1,000 runs of the flagship simulation, 2 processes, wall s",
      figure: flagshipWall.toFixed(1),
      goal: "≤ 120",
      note: `valid: ${halves.every((h) => h.valid)}; per process ${halves.map((h) => (h.ms / 1000).toFixed(1)).join(" s, ")} s`
    },
    {
      measurement: "a found bug (ack-before-processing) found and shrunk, wall s",
      figure: shrinkWall.toFixed(1),
      goal: "≤ 30",
      note: `${shrunk.violations[0]?.invariant ?? "-"}, size ${shrunk.counterexample?.size ?? "-"}, ${shrunk.shrinks} shrinks`
    },
    ...mutantRows,
    ...pipelineRows
  ],
  [
    "Mutants: a textual change to one package source, applied while modules load (packages/simulator/test/mutants); the correct reference pipeline is checked against it.",
    "Median scenarios to find: fast-check runs until the first failing scenario, over seeds 1–5, 300 runs each, no shrinking. Shrunk size = messages + faults + choices of the counterexample of seed 1.",
    `Machine: ${machine().cpu}, ${machine().cores} cores.`
  ]
)

// 5. The self-test gate at full size (45,000 runs of correct pipelines); BULWARK_BENCH_SELFTEST=0 skips it.
if (process.env["BULWARK_BENCH_SELFTEST"] !== "0") await import("./selftest.js")
