/**
 * The breaker alone, per call: a success through a closed Bulwark breaker against a success through a closed
 * cockatiel breaker, each above its own bare call (Bulwark in one Effect fiber, a loop of `yield*`; cockatiel a
 * loop of `await`, as each is used). Two measures:
 * - wall time: interleaved rounds of 20,000 sequential calls, median of the rounds; with it, the process's
 *   CPU time of the same rounds, which other work on the shared machine inflates far less;
 * - instructions per call under `valgrind --tool=callgrind`, which do not depend on what else runs on the
 *   machine: each variant runs twice in a child (a warm-up of 3 loops of 20,000 calls, as the wall rounds
 *   have, then one loop of 1,000 or 101,000 measured calls) and the difference of the two totals is divided by
 *   100,000, so start-up and warm-up cancel out (with 10,000 counted calls what V8 still compiles or collects in
 *   one child and not the other left a variant's count off by hundreds of instructions a call, once below zero).
 *   The warm-up must outlast V8's tier-up: with one loop of 20,000,
 *   the Effect fiber runtime was deoptimised and recompiled by TurboFan (about 140 ms of compiling, run on the
 *   main thread under `--single-threaded`) within the first calls of the measured loop, so the longer window
 *   carried the compile and the shorter did not: Bulwark's bare call read 6,602 instructions and the
 *   difference guarded − bare was noise (`node --single-threaded --trace-opt --trace-deopt` shows it). Smaller
 *   tier-ups still come later, so each total is counted less what ran under V8's compile entry points
 *   (`Runtime_Compile*`, inclusive): compiling is a cost of warming up, for either library, not of a call.
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
import { type Cause, Effect } from "effect"
import { execFile, execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import os from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { runtimeSteps } from "../../../bench/lib.js"
import * as Breaker from "../src/Breaker.js"

type Variant =
  | "bulwark-bare"
  | "bulwark"
  | "bulwark-call-bare"
  | "bulwark-call"
  | "floor-observe"
  | "floor-decide-observe"
  | "cockatiel-bare"
  | "cockatiel"
const variants: ReadonlyArray<Variant> = [
  "bulwark-bare",
  "bulwark",
  "bulwark-call-bare",
  "bulwark-call",
  "floor-observe",
  "floor-decide-observe",
  "cockatiel-bare",
  "cockatiel"
]
type EffectVariant = Exclude<Variant, "cockatiel-bare" | "cockatiel">

// Thresholds no run reaches: both breakers stay closed and every call is made.
const never = Number.MAX_SAFE_INTEGER

/**
 * Bulwark's calls, bare and through a closed breaker, each as it is run in one fiber. The guarded call goes
 * through `breaker.execute` on every call, as the middleware does and as the cockatiel loop calls
 * `breaker.execute(fn)`: an effect built once and run 20,000 times would leave out what building it costs.
 */
const effects = (): Record<EffectVariant, () => Effect.Effect<number, unknown>> => {
  const breaker = Effect.runSync(Breaker.make("bench", { window: { kind: "consecutive", threshold: never } }))
  const ok = Effect.succeed(1)
  const call = Effect.sync(() => 1)
  const rethrow = (cause: Cause.Cause<unknown>) => Effect.failCause(cause)
  return {
    "bulwark-bare": () => ok,
    bulwark: () => breaker.execute(ok),
    "bulwark-call-bare": () => call,
    "bulwark-call": () => breaker.execute(call),
    // Not breakers: the least Effect's public API lets any wrapper cost, with no logic of its own. One that
    // only sees the call's failure (one frame), and one that also decides when it runs whether to make the
    // call at all (a suspended thunk, then the frame): what a breaker must do, so no breaker built on the
    // public API can cost less than the second.
    "floor-observe": () => Effect.catchAllCause(call, rethrow),
    "floor-decide-observe": () => Effect.suspend(() => Effect.catchAllCause(call, rethrow))
  }
}

/** `n` sequential `yield*` of `call()` in one fiber. */
const program = (call: () => Effect.Effect<number, unknown>) => (n: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < n; i++) yield* call()
  })

const loops = (): Record<Variant, (n: number) => Promise<unknown>> => {
  const cockatiel = circuitBreaker(handleAll, { halfOpenAfter: 10_000, breaker: new ConsecutiveBreaker(never) })
  const okAsync = async () => 1
  const effectLoop = (call: () => Effect.Effect<number, unknown>) => (n: number) => Effect.runPromise(program(call)(n))
  const promiseLoop = (call: () => Promise<unknown>) => async (n: number) => {
    for (let i = 0; i < n; i++) await call()
  }
  const ours = effects()
  return {
    "bulwark-bare": effectLoop(ours["bulwark-bare"]),
    bulwark: effectLoop(ours.bulwark),
    "bulwark-call-bare": effectLoop(ours["bulwark-call-bare"]),
    "bulwark-call": effectLoop(ours["bulwark-call"]),
    "floor-observe": effectLoop(ours["floor-observe"]),
    "floor-decide-observe": effectLoop(ours["floor-decide-observe"]),
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
/** Loops of `N` calls each variant runs before it is measured, by wall time and by instructions alike. */
const WARM_LOOPS = 3
/** The two measured loops of the instruction count: their difference is {@link COUNTED} calls. */
const FEW = 1_000
const COUNTED = 100_000
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/**
 * Wall-clock ns per call of each variant, and the process's CPU ns per call (`process.cpuUsage`): rounds
 * interleaved, median of the rounds after a warm-up. The CPU time does not grow while other work on the machine
 * holds the cores; it includes V8's helper threads (concurrent compiling and marking, parallel scavenging) for
 * either library alike, which the median round leaves out when they run in a few rounds only. Not the main
 * thread's `/proc/thread-self/schedstat`: the kernel brings a running thread's figure there up to date only at
 * a scheduler tick or a switch, so over a round of a few milliseconds it read whole ticks (4 ms: 200 ns a call)
 * or nothing.
 */
export const wall = async (rounds = 15): Promise<{
  readonly wall: Record<Variant, number>
  readonly cpu: Record<Variant, number>
}> => {
  const run = loops()
  for (const variant of variants) for (let i = 0; i < WARM_LOOPS; i++) await run[variant](N)
  const samples = Object.fromEntries(variants.map((v) => [v, [] as Array<number>])) as Record<Variant, Array<number>>
  const cpuSamples = Object.fromEntries(variants.map((v) => [v, [] as Array<number>])) as Record<Variant, Array<number>>
  for (let r = 0; r < rounds; r++) {
    for (const variant of variants) {
      const cpuStart = process.cpuUsage()
      const start = process.hrtime.bigint()
      await run[variant](N)
      samples[variant].push(Number(process.hrtime.bigint() - start) / N)
      const cpuUsed = process.cpuUsage(cpuStart)
      cpuSamples[variant].push((cpuUsed.user + cpuUsed.system) * 1000 / N)
    }
  }
  const medians = (xs: Record<Variant, Array<number>>) =>
    Object.fromEntries(variants.map((v) => [v, median(xs[v])])) as Record<Variant, number>
  return { wall: medians(samples), cpu: medians(cpuSamples) }
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
        if (!totals) return reject(new Error(`no totals in ${out}`))
        // Less what V8's compilers ran (inclusive, from their runtime entry points): tier-up still lands in
        // the measured loops now and then, a one-off cost of warming up rather than a cost per call.
        execFile("callgrind_annotate", ["--inclusive=yes", "--threshold=100", out], { maxBuffer: 256 * 1024 * 1024 }, (error, stdout) => {
          if (error) return reject(error)
          let compiling = 0
          for (const line of stdout.split("\n")) {
            const match = line.match(/^\s*([\d,]+) .*v8::internal::Runtime_Compile\w*\(/)
            if (match) compiling += Number(match[1]!.replaceAll(",", ""))
          }
          return resolve(Number(totals[1]) - compiling)
        })
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
      const [few, many] = await Promise.all([
        callgrindTotal(bundle, dir, variant, FEW),
        callgrindTotal(bundle, dir, variant, FEW + COUNTED)
      ])
      result[variant] = (many - few) / COUNTED
    }
    return result as Record<Variant, number>
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (process.argv[2] === "--child") {
  const variant = process.argv[3] as Variant
  const run = loops()[variant]
  for (let i = 0; i < WARM_LOOPS; i++) await run(N)
  await run(Number(process.argv[4]))
}
