#!/usr/bin/env node
// Keeps every publishable package's manifest in the shape the packaging test (test/packaging.test.ts)
// expects: compiled exports with a source condition for the repository, peers for Effect, real internal
// version ranges, files, engines, repository, sideEffects and a build script.
//
//   node scripts/sync-packages.mjs          rewrite the manifests
//   node scripts/sync-packages.mjs --check  exit 1 if any manifest would change
//
// Public modules are src/*.ts and src/<Dir>/*.ts (drivers such as IdempotencyStore/Redis), never
// src/internal/**. Each gets a subpath; the barrel (src/index.ts) is ".".
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"

export const sourceCondition = "@bulwark/source"
export const engines = { node: "^20.19.0 || ^22.12.0 || >=24.0.0" }
export const repositoryUrl = "git+https://github.com/bulwark-dev/bulwark.git"

// Client libraries that only a driver subpath loads: optional peers, so a team that does not use the
// driver does not install the client.
// @effect/cli likewise: only a capability package's Cli subpath needs it (the bulwark binary has it as a
// required peer).
const optionalPeers = {
  "@bulwark/audit": ["@effect/cli"],
  "@bulwark/circuit-breaker": ["ioredis"],
  "@bulwark/resilience": ["ioredis", "@effect/sql"],
  "@bulwark/idempotency": ["ioredis"],
  "@bulwark/cli": ["tsx"],
  "@bulwark/contracts": ["@effect/cli"],
  "@bulwark/dead-letter": ["@effect/cli"],
  "@bulwark/simulator": ["@effect/cli"],
  "@bulwark/webhook": ["@effect/cli"]
}

const root = new URL("..", import.meta.url).pathname
const packagesDir = join(root, "packages")

// The CLI renders its top-level help after compiling (see packages/cli/scripts/write-help.mjs).
export const buildScript = (name) =>
  name === "@bulwark/cli" ? "tsc -b tsconfig.build.json && node scripts/write-help.mjs" : "tsc -b tsconfig.build.json"

const isEffect = (name) => name === "effect" || name.startsWith("@effect/")

export const publicModules = (dir) => {
  const src = join(dir, "src")
  const out = []
  for (const entry of readdirSync(src).sort()) {
    const full = join(src, entry)
    if (statSync(full).isDirectory()) {
      if (entry === "internal") continue
      for (const inner of readdirSync(full).sort()) {
        if (inner.endsWith(".ts") && !inner.endsWith(".d.ts")) out.push(`${entry}/${inner.slice(0, -3)}`)
      }
    } else if (entry.endsWith(".ts") && entry !== "index.ts" && entry !== "bin.ts") {
      out.push(entry.slice(0, -3))
    }
  }
  return out
}

const entry = (module) => ({
  [sourceCondition]: `./src/${module}.ts`,
  types: `./dist/${module}.d.ts`,
  import: `./dist/${module}.js`,
  default: `./dist/${module}.js`
})

const sortObject = (o) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)))

export const packageDirs = () =>
  readdirSync(packagesDir).sort().map((d) => join(packagesDir, d)).filter((d) => existsSync(join(d, "package.json")))

const versions = new Map(packageDirs().map((d) => {
  const pkg = JSON.parse(readFileSync(join(d, "package.json"), "utf8"))
  return [pkg.name, pkg.version]
}))

const internalRange = (name) => `^${versions.get(name)}`

export const sync = (dir, pkg) => {
  const name = pkg.name
  const deps = { ...pkg.dependencies }
  const dev = { ...pkg.devDependencies }
  const peers = { ...pkg.peerDependencies }
  const peersMeta = { ...pkg.peerDependenciesMeta }
  for (const [dep, range] of Object.entries(deps)) {
    if (isEffect(dep) || (optionalPeers[name] ?? []).includes(dep)) {
      delete deps[dep]
      peers[dep] = range
      dev[dep] = range
      if ((optionalPeers[name] ?? []).includes(dep)) peersMeta[dep] = { optional: true }
    }
  }
  for (const [dep, range] of Object.entries(peers)) {
    if (isEffect(dep) || dep === "vitest") dev[dep] = dev[dep] ?? range
    if ((optionalPeers[name] ?? []).includes(dep)) peersMeta[dep] = { optional: true }
  }
  for (const group of [deps, dev]) {
    for (const dep of Object.keys(group)) if (versions.has(dep)) group[dep] = internalRange(dep)
  }
  const exports = { "./package.json": "./package.json", ".": entry("index") }
  for (const module of publicModules(dir)) exports[`./${module}`] = entry(module)
  const out = {
    name,
    version: pkg.version,
    description: pkg.description,
    license: "MIT",
    repository: { type: "git", url: repositoryUrl, directory: `packages/${dir.split("/").pop()}` },
    type: "module",
    engines,
    sideEffects: name === "@bulwark/cli" ? ["./dist/bin.js"] : false,
    ...(pkg.bin ? { bin: pkg.bin } : {}),
    exports,
    files: ["dist", "src", "!dist/**/*.tsbuildinfo"],
    publishConfig: { access: "public", provenance: false },
    scripts: { ...pkg.scripts, build: buildScript(name) },
    ...(Object.keys(deps).length ? { dependencies: sortObject(deps) } : {}),
    ...(Object.keys(peers).length ? { peerDependencies: sortObject(peers) } : {}),
    ...(Object.keys(peersMeta).length ? { peerDependenciesMeta: sortObject(peersMeta) } : {}),
    ...(Object.keys(dev).length ? { devDependencies: sortObject(dev) } : {})
  }
  return out
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const check = process.argv.includes("--check")
  let stale = 0
  for (const dir of packageDirs()) {
    const file = join(dir, "package.json")
    const before = readFileSync(file, "utf8")
    const after = JSON.stringify(sync(dir, JSON.parse(before)), null, 2) + "\n"
    if (before !== after) {
      stale++
      if (check) console.error(`${file} is out of date; run node scripts/sync-packages.mjs`)
      else writeFileSync(file, after)
    }
  }
  if (check && stale > 0) process.exit(1)
}
