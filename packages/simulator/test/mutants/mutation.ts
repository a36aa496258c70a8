/**
 * Runs mutants: each in a child `node` process with the mutant applied while modules load. Shared by the
 * test suite and the benchmark.
 */
import { spawn } from "node:child_process"
import { rmSync } from "node:fs"
import { resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { bundleDir, bundleSources } from "../../../cli/test/support/bundle.js"
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

/**
 * The mutant applied to a source file's text: the search text must occur exactly once. Shared with `hook.mjs`'s
 * rule, so a mutant means the same whichever way it is loaded.
 */
const applyTo = (mutant: Mutant, text: string): string => {
  const at = text.indexOf(mutant.search)
  if (at < 0 || text.indexOf(mutant.search, at + 1) >= 0) {
    throw new Error(`mutant ${mutant.id}: the search text must occur exactly once in ${mutant.file}`)
  }
  return text.slice(0, at) + mutant.replace + text.slice(at + mutant.search.length)
}

/**
 * `run.ts` and the sources it reaches bundled once for this mutant, with the mutant applied to its file: the
 * child then starts in well under two seconds, where loading every module through tsx and the hook takes
 * several (25 mutants, in the suite's longest file). Undefined when bundling fails (the hook is used instead).
 */
const bundleFor = async (mutant: Mutant): Promise<{ readonly file: string; readonly remove: () => void } | undefined> => {
  const target = resolve(root, mutant.file)
  const outdir = bundleDir("bulwark-mutant-")
  const remove = () => rmSync(outdir, { recursive: true, force: true })
  let applied = 0
  try {
    const file = await bundleSources(resolve(here, "run.ts"), outdir, "run", (path, text) => {
      if (path !== target) return text
      applied++
      return applyTo(mutant, text)
    })
    // The mutated file must be part of what runs; a mutant of a file the simulation never loads proves nothing.
    if (applied !== 1) throw new Error(`mutant ${mutant.id}: ${mutant.file} is not reached from the simulation`)
    return { file, remove }
  } catch (error) {
    remove()
    if (String(error).includes(`mutant ${mutant.id}:`)) throw error
    return undefined
  }
}

/** Checks one mutant in a child process. */
export const runMutant = async (mutant: Mutant, seed: number, runs?: number, mode?: "find"): Promise<Outcome> => {
  const bundle = await bundleFor(mutant)
  const env = {
    ...process.env,
    BULWARK_MUTANT: JSON.stringify({ id: mutant.id, file: mutant.file, path: resolve(root, mutant.file), search: mutant.search, replace: mutant.replace })
  }
  const args = bundle === undefined
    ? ["--conditions=@bulwark/source", "--import", "tsx", "--import", resolve(here, "hook.mjs"), resolve(here, "run.ts"), mutant.id, String(seed)]
    : [bundle.file, mutant.id, String(seed)]
  args.push(String(runs ?? mutant.runs ?? 150))
  if (mode !== undefined) args.push(mode)
  try {
    return await new Promise<Outcome>((done, fail) => {
      // The bundle carries the mutant already: the hook is not loaded, and the variable only names it.
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
  } finally {
    bundle?.remove()
  }
}

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
