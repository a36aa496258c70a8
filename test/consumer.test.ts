/**
 * The consumer test: what a team gets from `npm install @bulwark/...`. Every package is built and packed; the
 * tarballs are installed into a fresh project in a temporary folder outside the repository, with its own strict
 * tsconfig (NodeNext, strict, skipLibCheck, noPropertyAccessFromIndexSignature); the project compiles
 * test/consumer/program.ts (outbox on PGlite → relay → idempotent consumer through retry and a breaker) and the
 * README's first pipeline, and runs them with plain `node` (no source condition, no tsx).
 *
 * Needs the npm registry (or npm's cache) for effect, typescript and the packages' other dependencies.
 * .ci/run leaves this file out (vitest `--exclude`) on all but the newest Node.
 */
import { spawn } from "node:child_process"
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

const root = fileURLToPath(new URL("..", import.meta.url))

const manifest = (dir: string) => JSON.parse(readFileSync(join(dir, "package.json"), "utf8"))
const packageDirs = readdirSync(join(root, "packages")).sort().map((d) => join(root, "packages", d))
  .filter((d) => existsSync(join(d, "package.json")))
const packages: ReadonlyArray<{ readonly name: string; readonly version: string; readonly dir: string }> = packageDirs
  .map((dir) => ({ name: manifest(dir).name, version: manifest(dir).version, dir }))

/**
 * The environment of a process outside the repository: no source condition (it would point Node at src/*.ts),
 * and none of the settings `npm test` gives its children (workspace, prefix, …) except where npm's cache and
 * registry are.
 */
const outsideEnv = (): NodeJS.ProcessEnv => {
  const keep = new Set(["npm_config_cache", "npm_config_registry", "npm_config_userconfig", "npm_config_globalconfig",
    "npm_config_proxy", "npm_config_https_proxy", "npm_config_noproxy", "npm_config_cafile", "npm_config_strict_ssl"])
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (key === "NODE_OPTIONS" || key === "INIT_CWD" || key.startsWith("VITEST") || key.startsWith("npm_package_")) continue
    if (key.toLowerCase().startsWith("npm_config_") && !keep.has(key.toLowerCase())) continue
    env[key] = value
  }
  env.NO_UPDATE_NOTIFIER = "1"
  env.npm_config_update_notifier = "false"
  return env
}

interface Result {
  readonly status: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

// Asynchronous, so that the vitest worker keeps answering its runner while npm and tsc work.
const run = (
  command: string,
  args: ReadonlyArray<string>,
  cwd: string,
  timeout = 300_000,
  env: NodeJS.ProcessEnv = outsideEnv()
): Promise<Result> =>
  new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"], timeout })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => { stdout += chunk })
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => { stderr += chunk })
    child.on("error", reject)
    child.on("close", (status, signal) => resolvePromise({ status, signal, stdout, stderr }))
  })

const ok = (result: Result, what: string): string => {
  if (result.status !== 0) {
    throw new Error(`${what} exited ${result.status ?? result.signal}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`)
  }
  return result.stdout
}

let work = ""
let project = ""

describe("consumer project outside the repository", () => {
  beforeAll(async () => {
    // Build every package (incremental: a no-op when dist/ is current).
    ok(await run(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-b", "tsconfig.build.json"], root), "tsc -b")
    ok(await run(process.execPath, [join(root, "packages/cli/scripts/write-help.mjs")], root), "the CLI's help text")
    work = mkdtempSync(join(tmpdir(), "bulwark-consumer-"))
    project = join(work, "app")
    mkdirSync(join(project, "src"), { recursive: true })
  }, 600_000)

  // Asynchronous and with room: the installed project holds every package's client libraries (the AWS and
  // Google SDKs among them), and a synchronous removal on a loaded machine stalled the worker past its timeouts.
  afterAll(async () => {
    if (work !== "" && process.env.BULWARK_CONSUMER_KEEP !== "1") await rm(work, { recursive: true, force: true })
  }, 300_000)

  let packed: ReadonlyArray<{ readonly name: string; readonly filename: string; readonly files: ReadonlyArray<{ readonly path: string }> }> = []

  it("packs every package with dist/, types, LICENSE and README, and without tests or tsconfig", async () => {
    const tarballs = join(work, "tarballs")
    mkdirSync(tarballs)
    const out = ok(await run("npm", ["pack", "--json", "--pack-destination", tarballs, ...packages.flatMap((p) => ["-w", p.name])], root), "npm pack")
    packed = JSON.parse(out.slice(out.indexOf("[")))
    expect(packed.map((p) => p.name).sort()).toEqual(packages.map((p) => p.name).sort())
    for (const p of packed) {
      const files = p.files.map((f) => f.path)
      expect(files, p.name).toContain("dist/index.js")
      expect(files, p.name).toContain("dist/index.d.ts")
      expect(files, p.name).toContain("dist/index.d.ts.map")
      expect(files, p.name).toContain("LICENSE")
      expect(files, p.name).toContain("README.md")
      expect(files.filter((f) => /(^|\/)(test|bench|examples)\/|\.test\.|tsconfig|tsbuildinfo/.test(f)), p.name).toEqual([])
    }
  }, 300_000)

  it("installs the tarballs with one copy of effect", async () => {
    const version = (name: string) => manifest(join(root, "node_modules", name)).version as string
    writeFileSync(join(project, "package.json"), JSON.stringify({
      name: "bulwark-consumer",
      private: true,
      type: "module",
      dependencies: {
        ...Object.fromEntries(packed.map((p) => [p.name, `file:../tarballs/${p.filename.split("/").pop()}`])),
        effect: `^${version("effect")}`,
        "@effect/sql": `^${version("@effect/sql")}`
      },
      devDependencies: { typescript: version("typescript"), "@types/node": `^${version("@types/node").split(".")[0]}` }
    }, null, 2))
    ok(await run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline"], project, 600_000), "npm install")
    for (const p of packages) {
      // From the tarball, not from a registry package of the same name.
      expect(existsSync(join(project, "node_modules", p.name, "dist/index.js")), p.name).toBe(true)
    }
    const copies: Array<string> = []
    const walk = (dir: string) => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        if (!entry.isDirectory()) continue
        const full = join(dir, entry.name)
        if (entry.name === "effect" && existsSync(join(full, "package.json")) && manifest(full).name === "effect") copies.push(full)
        if (entry.name === "node_modules" || entry.name.startsWith("@") || existsSync(join(full, "node_modules"))) {
          walk(entry.name === "node_modules" || entry.name.startsWith("@") ? full : join(full, "node_modules"))
        }
      }
    }
    walk(join(project, "node_modules"))
    expect(copies.map((c) => c.slice(project.length))).toEqual(["/node_modules/effect"])
  }, 600_000)

  it("compiles with a strict tsconfig and runs the outbox → relay → consumer program and the README pipeline with node", async () => {
    writeFileSync(join(project, "tsconfig.json"), JSON.stringify({
      compilerOptions: {
        target: "ES2022",
        module: "NodeNext",
        moduleResolution: "NodeNext",
        strict: true,
        skipLibCheck: true,
        noPropertyAccessFromIndexSignature: true,
        noUncheckedIndexedAccess: true,
        exactOptionalPropertyTypes: true,
        verbatimModuleSyntax: true,
        rootDir: "src",
        outDir: "dist",
        types: ["node"]
      },
      include: ["src"]
    }, null, 2))
    copyFileSync(join(root, "test/consumer/program.ts"), join(project, "src/main.ts"))
    copyFileSync(join(root, "docs/snippets/first-pipeline.ts"), join(project, "src/first-pipeline.ts"))
    ok(await run(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "."], project), "tsc in the consumer")

    const main = ok(await run(process.execPath, ["dist/main.js"], project, 120_000), "node dist/main.js")
    expect(main).toContain("OK: every order shipped exactly once")
    const first = await run(process.execPath, ["dist/first-pipeline.js"], project, 60_000)
    expect(first.status, first.stderr).toBe(0)
    expect(first.stdout.match(/order order-1 paid 1250/g)).toHaveLength(1)
  }, 300_000)

  it("loads no client library when a pattern package's barrel is imported", async () => {
    const hook = join(project, "record-loads.mjs")
    writeFileSync(hook, [
      `import { register } from "node:module"`,
      `register("data:text/javascript," + encodeURIComponent(\``,
      `import { appendFileSync } from "node:fs"`,
      `export async function load(url, context, next) { appendFileSync(process.env.LOADED_LIST, url + "\\\\n"); return next(url, context) }`,
      `\`))`
    ].join("\n"))
    const clients = /\/node_modules\/(ioredis|pg|pg-[a-z-]+|@electric-sql\/pglite|amqplib|nats|@opentelemetry\/(sdk|exporter)[a-z-]*|@effect\/cli)\//
    const names = ["@bulwark/idempotency", "@bulwark/core", "@bulwark/retry", "@bulwark/circuit-breaker", "@bulwark/transport",
      "@bulwark/dead-letter", "@bulwark/webhook", "@bulwark/tracing", "@bulwark/sql", "@bulwark/outbox", "@bulwark/simulator"]
    // Each import in a process of its own (a module loaded once stays loaded), four processes at a time: one
    // after another they took most of this test's time.
    const check = async (name: string) => {
      const list = join(work, `loaded-${name.replace("/", "+")}.txt`)
      writeFileSync(list, "")
      const script = `await import(${JSON.stringify(name)}); ` +
        `const { createRequire } = await import("node:module"); ` +
        `console.log(JSON.stringify(Object.keys(createRequire(import.meta.url).cache)))`
      const out = ok(await run(process.execPath, ["--import", "./record-loads.mjs", "--input-type=module", "-e", script], project,
        60_000, { ...outsideEnv(), LOADED_LIST: list }), `import("${name}")`)
      const loaded = [...readFileSync(list, "utf8").split("\n"), ...JSON.parse(out.trim().split("\n").pop()!) as Array<string>]
        .filter((u) => u !== "")
      expect(loaded.some((u) => u.includes(`/node_modules/${name}/dist/`)), `${name} was loaded from dist/`).toBe(true)
      expect(loaded.filter((u) => clients.test(u)), `${name} loaded client libraries`).toEqual([])
    }
    const queue = [...names]
    await Promise.all(Array.from({ length: 4 }, async () => {
      for (let name = queue.shift(); name !== undefined; name = queue.shift()) await check(name)
    }))
  }, 300_000)

  it("runs the installed bulwark binary without tsx: plain help, exit 2 on an unknown command", async () => {
    const bin = resolve(project, "node_modules/.bin/bulwark")
    const help = await run(process.execPath, [bin, "--help"], project, 60_000)
    expect(help.status, help.stderr).toBe(0)
    expect(help.stdout).toContain("USAGE")
    expect(help.stdout).not.toContain("\u001b[")
    // The help text rendered at build time is what the CLI renders itself.
    const rendered = await run(process.execPath, [bin, "--help"], project, 60_000, { ...outsideEnv(), BULWARK_HELP_CACHE: "off" })
    expect(help.stdout).toBe(rendered.stdout)
    expect(help.stdout).toContain("dlq replay")
    const unknown = await run(process.execPath, [bin, "journal", "--help"], project, 60_000)
    expect(unknown.status).toBe(2)
    expect(unknown.stderr).toContain("unknown command")
    expect(existsSync(join(project, "node_modules/tsx")), "tsx is not installed with the CLI").toBe(false)

    // Start-up time, for docs/benchmarks.md (the figure there is measured on an otherwise idle machine).
    const time = async (command: string, args: ReadonlyArray<string>) => {
      const started = performance.now()
      ok(await run(command, args, project, 60_000), `${command} ${args.join(" ")}`)
      return performance.now() - started
    }
    const times: Array<number> = []
    for (let i = 0; i < 5; i++) times.push(await time(process.execPath, [bin, "--help"]))
    times.sort((a, b) => a - b)
    const npx: Array<number> = []
    for (let i = 0; i < 3; i++) npx.push(await time("npx", ["--no-install", "bulwark", "--help"]))
    npx.sort((a, b) => a - b)
    console.log(`bulwark --help on Node ${process.versions.node}: median ${times[2]!.toFixed(0)} ms (node bin), ` +
      `${npx[1]!.toFixed(0)} ms (npx)`)
    expect(times[2]).toBeLessThan(Number(process.env.BULWARK_CLI_HELP_BUDGET_MS ?? 5000))
  }, 300_000)
})
