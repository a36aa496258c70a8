/**
 * The breaker alone, per call: a success through a closed Bulwark breaker against a success through a closed
 * cockatiel breaker, each above its own bare call (Bulwark in one Effect fiber, a loop of `yield*`; cockatiel a
 * loop of `await`, as each is used). Two measures:
 * - wall time: interleaved rounds of 20,000 sequential calls, median of the rounds;
 * - instructions per call under `valgrind --tool=callgrind`, which do not depend on what else runs on the
 *   machine: each variant runs twice in a child (a warm-up of 20,000 calls, then 1,000 or 21,000 measured
 *   calls) and the difference of the two totals is divided by 20,000, so start-up and warm-up cancel out.
 *
 * - Effect runtime steps per call (run-loop iterations, counted by a supervisor): where Bulwark's instructions go.
 *
 * Bulwark's call is measured twice. `Effect.succeed(1)` is the established row: a value, which `yield*`
 * takes without a run-loop step when bare but which the breaker must run as a step of its own inside its
 * failure frame. `Effect.sync(() => 1)` calls a function, as cockatiel's `async () => 1` does, so the bare
 * call and the guarded one both pay for the call's own step and the difference is the breaker's alone.
 *
 * `node perCall.ts --child <variant> <calls>` is the child; the benchmark bundles this file with esbuild so the
 * child starts without a TypeScript loader under valgrind.
 */
import { circuitBreaker, ConsecutiveBreaker, handleAll } from "cockatiel"
import { Effect } from "effect"
import { execFile, execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import os from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { runtimeSteps } from "../../../bench/lib.js"
import * as Breaker from "../src/Breaker.js"

type Variant = "bulwark-bare" | "bulwark" | "bulwark-call-bare" | "bulwark-call" | "cockatiel-bare" | "cockatiel"
const variants: ReadonlyArray<Variant> = ["bulwark-bare", "bulwark", "bulwark-call-bare", "bulwark-call", "cockatiel-bare", "cockatiel"]

// Thresholds no run reaches: both breakers stay closed and every call is made.
const never = Number.MAX_SAFE_INTEGER

/** Bulwark's calls, bare and through a closed breaker, each as it is run in one fiber. */
const effects = () => {
  const breaker = Effect.runSync(Breaker.make("bench", { window: { kind: "consecutive", threshold: never } }))
  const ok = Effect.succeed(1)
  const call = Effect.sync(() => 1)
  return {
    "bulwark-bare": ok,
    bulwark: breaker.execute(ok),
    "bulwark-call-bare": call,
    "bulwark-call": breaker.execute(call)
  }
}

/** `n` sequential `yield*` of `effect` in one fiber. */
const program = (effect: Effect.Effect<number, unknown>) => (n: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < n; i++) yield* effect
  })

const loops = (): Record<Variant, (n: number) => Promise<unknown>> => {
  const cockatiel = circuitBreaker(handleAll, { halfOpenAfter: 10_000, breaker: new ConsecutiveBreaker(never) })
  const okAsync = async () => 1
  const effectLoop = (effect: Effect.Effect<number, unknown>) => (n: number) => Effect.runPromise(program(effect)(n))
  const promiseLoop = (call: () => Promise<unknown>) => async (n: number) => {
    for (let i = 0; i < n; i++) await call()
  }
  const ours = effects()
  return {
    "bulwark-bare": effectLoop(ours["bulwark-bare"]),
    bulwark: effectLoop(ours.bulwark),
    "bulwark-call-bare": effectLoop(ours["bulwark-call-bare"]),
    "bulwark-call": effectLoop(ours["bulwark-call"]),
    "cockatiel-bare": promiseLoop(okAsync),
    cockatiel: promiseLoop(() => cockatiel.execute(okAsync))
  }
}

/** Effect runtime steps per call of each Bulwark variant, with the op codes of the steps. */
export const steps = async () => {
  const ours = effects()
  const result: Partial<Record<keyof typeof ours, Awaited<ReturnType<typeof runtimeSteps>>>> = {}
  for (const name of Object.keys(ours) as Array<keyof typeof ours>) result[name] = await runtimeSteps(program(ours[name]))
  return result as Record<keyof typeof ours, Awaited<ReturnType<typeof runtimeSteps>>>
}

const N = 20_000
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** Wall-clock ns per call of each variant: rounds interleaved, median of the rounds after a warm-up. */
export const wall = async (rounds = 15): Promise<Record<Variant, number>> => {
  const run = loops()
  for (const variant of variants) for (let i = 0; i < 3; i++) await run[variant](N)
  const samples = Object.fromEntries(variants.map((v) => [v, [] as Array<number>])) as Record<Variant, Array<number>>
  for (let r = 0; r < rounds; r++) {
    for (const variant of variants) {
      const start = process.hrtime.bigint()
      await run[variant](N)
      samples[variant].push(Number(process.hrtime.bigint() - start) / N)
    }
  }
  return Object.fromEntries(variants.map((v) => [v, median(samples[v])])) as Record<Variant, number>
}

const here = dirname(fileURLToPath(import.meta.url))

const callgrindTotal = (bundle: string, dir: string, variant: Variant, calls: number) =>
  new Promise<number>((resolve, reject) => {
    const out = join(dir, `${variant}-${calls}.out`)
    execFile(
      "valgrind",
      ["--tool=callgrind", "--smc-check=all-non-file", `--callgrind-out-file=${out}`, process.execPath, "--single-threaded", bundle, "--child", variant, String(calls)],
      { maxBuffer: 64 * 1024 * 1024 },
      (error) => {
        if (error) return reject(error)
        const totals = readFileSync(out, "utf8").match(/^(?:summary|totals): (\d+)/m)
        return totals ? resolve(Number(totals[1])) : reject(new Error(`no totals in ${out}`))
      }
    )
  })

/**
 * Instructions per call of each variant under callgrind, or `undefined` when valgrind is not installed.
 * Two children run at a time (the machine has two cores).
 */
export const instructions = async (): Promise<Record<Variant, number> | undefined> => {
  try {
    execFileSync("valgrind", ["--version"], { stdio: "ignore" })
  } catch {
    return undefined
  }
  const dir = mkdtempSync(join(os.tmpdir(), "breaker-callgrind-"))
  try {
    const bundle = join(dir, "perCall.mjs")
    // esbuild (tsx's bundler, already installed) as its own executable.
    execFileSync(join(here, "..", "..", "..", "node_modules", "esbuild", "bin", "esbuild"), [
      join(here, "perCall.ts"),
      "--bundle",
      "--platform=node",
      "--format=esm",
      "--conditions=@bulwark/source",
      `--outfile=${bundle}`,
      "--log-level=warning"
    ])
    const result: Partial<Record<Variant, number>> = {}
    for (const variant of variants) {
      const [few, many] = await Promise.all([callgrindTotal(bundle, dir, variant, 1_000), callgrindTotal(bundle, dir, variant, 21_000)])
      result[variant] = (many - few) / 20_000
    }
    return result as Record<Variant, number>
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (process.argv[2] === "--child") {
  const variant = process.argv[3] as Variant
  const run = loops()[variant]
  await run(20_000)
  await run(Number(process.argv[4]))
}
