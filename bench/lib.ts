/**
 * Shared helpers for benchmarks: machine description, timing loops and result files under bench/results/.
 * A package's benchmark lives in `packages/<name>/bench/index.ts`; `npm run bench` runs each in turn in
 * its own process so they do not compete for the two cores.
 */
import { Effect, RuntimeFlags, RuntimeFlagsPatch, Supervisor } from "effect"
import { fork } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import os from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

/** Where results are written. */
export const resultsDir = join(dirname(fileURLToPath(import.meta.url)), "results")

/** The machine a result was measured on. */
export const machine = () => ({
  cpu: os.cpus()[0]?.model ?? "unknown",
  cores: os.cpus().length,
  memoryGiB: Math.round(os.totalmem() / 2 ** 30),
  node: process.version,
  platform: `${os.platform()} ${os.release()}`,
  // Whether Bulwark ran compiled (dist/, `npm run bench`) or from its TypeScript sources through tsx.
  code: (process.env["NODE_OPTIONS"] ?? "").includes("bench/compiled.mjs") ? "compiled (dist/)" : "TypeScript sources (tsx)",
  loadAverage: os.loadavg().map((n) => Math.round(n * 100) / 100).join(" / ")
})

/** One row of a result table: a named measurement and its figures. */
export type Row = Record<string, string | number>

/** Writes `<name>.json` and `<name>.md` with the machine, the date, the rows and free-form notes. */
export const writeResults = (name: string, title: string, rows: ReadonlyArray<Row>, notes: ReadonlyArray<string> = []) => {
  mkdirSync(resultsDir, { recursive: true })
  const m = machine()
  const date = new Date().toISOString()
  writeFileSync(join(resultsDir, `${name}.json`), JSON.stringify({ name, title, date, machine: m, rows, notes }, null, 2) + "\n")
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))]
  const md = [
    `# ${title}`,
    "",
    `Measured ${date} on ${m.cpu} (${m.cores} cores, ${m.memoryGiB} GiB), Node ${m.node}, ${m.platform}; Bulwark ${m.code}; load average ${m.loadAverage} (1 / 5 / 15 min) when written.`,
    "",
    `| ${columns.join(" | ")} |`,
    `| ${columns.map(() => "---").join(" | ")} |`,
    ...rows.map((row) => `| ${columns.map((c) => String(row[c] ?? "")).join(" | ")} |`),
    "",
    ...notes.map((n) => `- ${n}`),
    ""
  ].join("\n")
  writeFileSync(join(resultsDir, `${name}.md`), md)
  console.log(md)
}

/** Runs `fn` repeatedly for about `ms` after a warm-up and answers operations per second. */
export const opsPerSecond = async (fn: () => Promise<unknown> | unknown, ms = 2_000, warmupMs = 500): Promise<number> => {
  const until = (deadline: number) => async () => {
    let count = 0
    while (performance.now() < deadline) {
      for (let i = 0; i < 100; i++) await fn()
      count += 100
    }
    return count
  }
  await until(performance.now() + warmupMs)()
  const start = performance.now()
  const count = await until(start + ms)()
  return count / ((performance.now() - start) / 1000)
}

/** Counts the Effect run-loop iterations of the fibers it supervises, by op code. */
class StepCounter extends Supervisor.AbstractSupervisor<void> {
  count = 0
  readonly byOp: Record<string, number> = {}
  readonly value = Effect.void
  override onEffect(_fiber: unknown, effect: unknown): void {
    this.count++
    const op = (effect as { readonly _op?: string })._op ?? "?"
    this.byOp[op] = (this.byOp[op] ?? 0) + 1
  }
}

/**
 * Effect run-loop iterations ("runtime steps") per call of `program(calls)`, in total and by op code, counted
 * by a supervisor with op supervision on. A step count does not depend on the machine's load or on where
 * garbage collection falls, and says where an Effect guard's cost goes: each step is one turn of the
 * fiber's run loop (yield check, dispatch, the op itself).
 */
export const runtimeSteps = async (
  program: (calls: number) => Effect.Effect<unknown, unknown>,
  calls = 10_000
): Promise<{ readonly perCall: number; readonly byOp: Record<string, number> }> => {
  const counter = new StepCounter()
  await Effect.runPromise(
    Effect.withRuntimeFlagsPatch(Effect.supervised(program(calls), counter), RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision))
  )
  const byOp: Record<string, number> = {}
  for (const [op, n] of Object.entries(counter.byOp)) {
    const per = Math.round((n / calls) * 100) / 100
    if (per > 0) byOp[op] = per
  }
  return { perCall: Math.round((counter.count / calls) * 100) / 100, byOp }
}

/** A long-lived child process that runs one side of a benchmark when asked (see {@link benchWorker}). */
export interface BenchWorker<Answer> {
  /** Sends `message` and resolves with the child's next answer; rejects if the child exits first. One at a time. */
  readonly request: (message: unknown) => Promise<Answer>
  /** Disconnects the child (which ends it when it is idle) and kills it if it is still there. */
  readonly stop: () => void
}

/**
 * Forks `path` as a benchmark's worker, with this process's flags and environment plus `env` (the loader and
 * conditions that load Bulwark's compiled dist): systems compared side by side each run in a process of their
 * own, where they would otherwise share the heap, the garbage collector and V8's compiled code.
 */
export const benchWorker = <Answer>(
  path: string,
  env: Record<string, string>,
  options: { readonly serialization?: "json" | "advanced" } = {}
): BenchWorker<Answer> => {
  const child = fork(path, [], { env: { ...process.env, ...env }, ...options })
  let pending: { readonly resolve: (a: Answer) => void; readonly reject: (e: Error) => void } | undefined
  let exited: Error | undefined
  child.on("exit", (code, signal) => {
    exited = new Error(`the benchmark's worker ${path} (${JSON.stringify(env)}) exited (${code ?? signal})`)
    pending?.reject(exited)
    pending = undefined
  })
  child.on("error", (error) => {
    pending?.reject(error)
    pending = undefined
  })
  child.on("message", (answer: Answer) => {
    const p = pending
    pending = undefined
    p?.resolve(answer)
  })
  return {
    request: (message) =>
      new Promise<Answer>((resolve, reject) => {
        if (exited) return reject(exited)
        pending = { resolve, reject }
        child.send(message as any)
      }),
    stop: () => {
      if (child.connected) child.disconnect()
      if (child.exitCode === null && child.signalCode === null) child.kill()
    }
  }
}
