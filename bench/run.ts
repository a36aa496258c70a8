/**
 * `npm run bench`: runs every `packages/*\/bench/index.ts` and `examples/*\/bench/index.ts` one after
 * another, each in its own process. `npm run bench -- webhook retry` runs only those packages.
 *
 * The benchmarks in {@link builtCode} measure Bulwark against another library's compiled code, so they run
 * Bulwark's built `dist` (what users run; `npm run build` first) rather than its sources through tsx, whose
 * transform wraps every closure it creates in a naming call.
 */
import { spawnSync } from "node:child_process"
import { existsSync, readdirSync } from "node:fs"
import { join } from "node:path"

const only = process.argv.slice(2)
const roots = ["packages", "examples"]
const targets = roots.flatMap((root) =>
  readdirSync(root)
    .filter((name) => existsSync(join(root, name, "bench", "index.ts")))
    .filter((name) => only.length === 0 || only.includes(name))
    .map((name) => join(root, name, "bench", "index.ts"))
)
/** Benchmarks run against the built packages: their peer is a compiled client, not sources. */
const builtCode = new Set(["transport-kinesis", "transport-sqs", "transport-pubsub"])
let failed = 0
for (const target of targets) {
  console.log(`\n=== ${target}`)
  const name = target.split("/")[1]!
  const built = builtCode.has(name)
  if (built && !existsSync(join("packages", name, "dist", "index.js"))) {
    console.error(`${target} measures the built package: run \`npm run build\` first`)
    failed++
    continue
  }
  const conditions = built ? [] : ["--conditions=@bulwark/source"]
  const result = spawnSync(process.execPath, [...conditions, "--import", "tsx", target], { stdio: "inherit" })
  if (result.status !== 0) {
    failed++
    console.error(`${target} failed with ${result.status}`)
  }
}
if (targets.length === 0) console.log("no benchmarks matched")
process.exit(failed === 0 ? 0 : 1)
