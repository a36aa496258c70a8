/**
 * The self-test gate at full size: the docs' snippet, the reference pipeline and the payments example's real
 * consumers, at poison rates 0, 0.1 and 0.3, over 10 seeds × 500 runs each (45,000 runs), must raise no
 * false alarm. The suite runs a slice of it (test/SelfTest.test.ts); this runs all of it, in two processes,
 * and writes bench/results/simulator-selftest.{json,md}. Exits 1 if any run broke an invariant.
 *
 * `index.ts` runs it after the other simulator benchmarks; `selftest.ts worker <cells>` is one process's share.
 */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { writeResults } from "../../../bench/lib.js"

const pipelines = ["docs snippet", "reference pipeline", "payments example"] as const
const poisonRates = [0, 0.1, 0.3] as const
const seeds = Array.from({ length: 10 }, (_, i) => 201 + i)
const runs = 500

interface Cell {
  readonly pipeline: typeof pipelines[number]
  readonly poisonRate: number
  readonly seed: number
}
interface CellResult extends Cell {
  readonly runs: number
  readonly violations: number
  readonly first?: string
  readonly ms: number
}

if (process.argv[2] === "worker") {
  const [{ simulation: docs }, { simulation: payments }, { simulation: reference }, Simulation, Simulator] = await Promise.all([
    import("../../../docs/snippets/simulation.js"),
    import("../../../examples/payments/test/payments.simulation.js"),
    import("../examples/reference.js"),
    import("../src/Simulation.js"),
    import("../src/Simulator.js")
  ])
  const byName = { "docs snippet": docs, "reference pipeline": reference, "payments example": payments }
  for (const cell of JSON.parse(process.argv[3]!) as Array<Cell>) {
    const simulation = byName[cell.pipeline]
    const gated = Simulation.make({ ...simulation, workload: { ...simulation.workload, poisonRate: cell.poisonRate } })
    const started = performance.now()
    const report = Simulator.check(gated, { runs, seed: cell.seed, shrinkBudget: 100 })
    const result: CellResult = {
      ...cell,
      runs: report.runs,
      violations: report.violations.length,
      ...(report.valid ? {} : { first: `${report.violations[0]?.invariant}: ${report.violations[0]?.message} (${report.replay ?? ""})` }),
      ms: performance.now() - started
    }
    process.stdout.write(JSON.stringify(result) + "\n")
  }
  process.exit(0)
}

const cells: Array<Cell> = pipelines.flatMap((pipeline) =>
  poisonRates.flatMap((poisonRate) => seeds.map((seed) => ({ pipeline, poisonRate, seed }))))
const self = fileURLToPath(import.meta.url)
const worker = (share: ReadonlyArray<Cell>) =>
  new Promise<Array<CellResult>>((done, fail) => {
    const child = spawn(process.execPath, ["--conditions=@bulwark/source", "--import", "tsx", self, "worker", JSON.stringify(share)], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    let out = ""
    child.stdout.on("data", (chunk) => (out += chunk))
    child.on("close", (code) =>
      code === 0
        ? done(out.trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as CellResult))
        : fail(new Error(`self-test worker exited ${code}`)))
  })
const started = performance.now()
const results = (await Promise.all([0, 1].map((w) => worker(cells.filter((_, i) => i % 2 === w))))).flat()
const wall = (performance.now() - started) / 1000
const rows = pipelines.flatMap((pipeline) =>
  poisonRates.map((poisonRate) => {
    const mine = results.filter((r) => r.pipeline === pipeline && r.poisonRate === poisonRate)
    const failing = mine.filter((r) => r.violations > 0)
    return {
      pipeline,
      "poison rate": poisonRate,
      seeds: mine.length,
      runs: mine.reduce((n, r) => n + r.runs, 0),
      "failed checks": failing.length,
      "first failure": failing[0]?.first ?? "",
      "CPU s": (mine.reduce((n, r) => n + r.ms, 0) / 1000).toFixed(0)
    }
  }))
const failed = results.filter((r) => r.violations > 0).length
writeResults("simulator-selftest", "Simulator self-test gate: correct pipelines, no false alarm", rows, [
  `${results.length} checks of ${runs} runs (seeds ${seeds[0]}–${seeds[seeds.length - 1]}), ${results.reduce((n, r) => n + r.runs, 0)} runs in all, ${failed} failed; ${wall.toFixed(0)} s wall in two processes.`,
  "Every built-in invariant is checked in every run; a failed check would list its first violation and its replay command."
])
if (failed > 0) process.exit(1)
