// A module-loading hook that applies one mutant (a textual change to one source file of a Bulwark package)
// before the file is compiled, so a simulation runs against the mutated package and nothing on disk changes.
// The mutant comes in `BULWARK_MUTANT` as JSON: { "file": "<repo-relative path>", "search": "...", "replace": "..." }.
import { readFileSync } from "node:fs"
import { register } from "node:module"
import { pathToFileURL } from "node:url"
import { isMainThread } from "node:worker_threads"

// Hooks run in their own thread, which loads this file again: only the main thread registers.
if (isMainThread && process.env.BULWARK_MUTANT !== undefined) {
  register(import.meta.url, { data: process.env.BULWARK_MUTANT })
}

let mutant

export async function initialize(data) {
  mutant = JSON.parse(data)
  mutant.url = pathToFileURL(mutant.path).href
  mutant.applied = false
}

export async function load(url, context, nextLoad) {
  if (mutant === undefined || url.split("?")[0] !== mutant.url) return nextLoad(url, context)
  const original = readFileSync(new URL(url), "utf8")
  const at = original.indexOf(mutant.search)
  if (at < 0 || original.indexOf(mutant.search, at + 1) >= 0) {
    throw new Error(`mutant ${mutant.id}: the search text must occur exactly once in ${mutant.file}`)
  }
  const mutated = original.slice(0, at) + mutant.replace + original.slice(at + mutant.search.length)
  const { transform } = await import("esbuild")
  const { code } = await transform(mutated, { loader: "ts", format: "esm", sourcefile: mutant.file, target: "node20" })
  return { format: "module", source: code, shortCircuit: true }
}
