/**
 * Runs mutants: each in a child `node` process with the mutant applied while modules load. Shared by the
 * test suite and the benchmark.
 */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { resolve } from "node:path"
import type { Mutant } from "./catalogue.js"

const here = fileURLToPath(new URL(".", import.meta.url))
/** The repository root (mutant files are named relative to it). */
export const root = resolve(here, "../../../..")

/** What the child process reports for one mutant. */
export interface Outcome {
  readonly id: string
  readonly seed: number
  readonly caught: boolean
  readonly invariant?: string
  readonly message?: string
  readonly expected: ReadonlyArray<string>
  readonly scenariosToFind: number
  readonly size?: number
  readonly shrinks: number
  readonly findMillis: number
  readonly shrinkMillis: number
  readonly replay?: string
}

/** Checks one mutant (or, with `mutant: undefined`, the unmutated packages) in a child process. */
export const runMutant = (mutant: Mutant, seed: number, runs?: number, mode?: "find"): Promise<Outcome> =>
  new Promise((done, fail) => {
    const env = {
      ...process.env,
      BULWARK_MUTANT: JSON.stringify({ id: mutant.id, file: mutant.file, path: resolve(root, mutant.file), search: mutant.search, replace: mutant.replace })
    }
    const args = ["--conditions=@bulwark/source", "--import", "tsx", "--import", resolve(here, "hook.mjs"), resolve(here, "run.ts"), mutant.id, String(seed)]
    args.push(String(runs ?? mutant.runs ?? 150))
    if (mode !== undefined) args.push(mode)
    const child = spawn(process.execPath, args, { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    child.stdout.on("data", (chunk) => (out += chunk))
    child.stderr.on("data", (chunk) => (err += chunk))
    child.on("error", fail)
    child.on("close", (code) => {
      const line = out.trim().split("\n").pop() ?? ""
      if (code !== 0 || line === "") return fail(new Error(`mutant ${mutant.id} exited ${code}: ${err.slice(-2000)}`))
      done(JSON.parse(line) as Outcome)
    })
  })

/** Runs `tasks` with at most `limit` at once, in order. */
export const pool = async <A, B>(items: ReadonlyArray<A>, limit: number, task: (a: A) => Promise<B>): Promise<Array<B>> => {
  const results: Array<B> = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await task(items[i]!)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return results
}
