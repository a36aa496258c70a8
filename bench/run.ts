/**
 * `npm run bench`: runs every `packages/*\/bench/index.ts` and `examples/*\/bench/index.ts` one after
 * another, each in its own process. `npm run bench -- webhook retry` runs only those packages.
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
let failed = 0
for (const target of targets) {
  console.log(`\n=== ${target}`)
  const result = spawnSync(process.execPath, ["--conditions=@bulwark/source", "--import", "tsx", target], { stdio: "inherit" })
  if (result.status !== 0) {
    failed++
    console.error(`${target} failed with ${result.status}`)
  }
}
if (targets.length === 0) console.log("no benchmarks matched")
process.exit(failed === 0 ? 0 : 1)
