/**
 * `npm run bench`: runs every `packages/*\/bench/index.ts` and `examples/*\/bench/index.ts` one after
 * another, each in its own process. `npm run bench -- webhook retry` runs only those packages.
 *
 * Bulwark is measured as users run it: compiled (`npm run build` first, incremental), its modules loaded from
 * `dist/` whichever way a benchmark imports them (`bench/compiled.mjs`, also in every process a benchmark
 * starts). `BULWARK_BENCH_SOURCES=1` runs the TypeScript sources through tsx instead.
 */
import { spawnSync } from "node:child_process"
import { existsSync, readdirSync } from "node:fs"
import { join, resolve } from "node:path"
import { pathToFileURL } from "node:url"

const only = process.argv.slice(2)
const roots = ["packages", "examples"]
const targets = roots.flatMap((root) =>
  readdirSync(root)
    .filter((name) => existsSync(join(root, name, "bench", "index.ts")))
    .filter((name) => only.length === 0 || only.includes(name))
    .map((name) => join(root, name, "bench", "index.ts"))
)
const sources = process.env["BULWARK_BENCH_SOURCES"] === "1"
let env = process.env
if (!sources && targets.length > 0) {
  const build = spawnSync("npm", ["run", "build"], { stdio: "inherit" })
  if (build.status !== 0) {
    console.error("npm run build failed: the benchmarks measure the compiled packages")
    process.exit(1)
  }
  // In NODE_OPTIONS, so the processes a benchmark starts (servers, workers) load compiled code as well.
  const hook = `--import=${pathToFileURL(resolve("bench/compiled.mjs")).href}`
  env = { ...process.env, NODE_OPTIONS: `${process.env["NODE_OPTIONS"] ?? ""} ${hook}`.trim() }
}
console.log(sources ? "measuring the TypeScript sources (tsx)" : "measuring the compiled packages (dist/)")
let failed = 0
for (const target of targets) {
  console.log(`\n=== ${target}`)
  const result = spawnSync(process.execPath, ["--conditions=@bulwark/source", "--import", "tsx", target], { stdio: "inherit", env })
  if (result.status !== 0) {
    failed++
    console.error(`${target} failed with ${result.status}`)
  }
}
if (targets.length === 0) console.log("no benchmarks matched")
process.exit(failed === 0 ? 0 : 1)
