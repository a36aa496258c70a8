import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { launcher, runCli } from "../../cli/test/support/bin.js"

const root = resolve(__dirname, "../../..")
const dir = mkdtempSync(join(tmpdir(), "bulwark-simulate-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

// The launcher: `simulate` is given TypeScript modules, which share the CLI's copy of the workspace packages.
const simulate = (...args: Array<string>) => runCli(["simulate", ...args], { entry: launcher, cwd: root, timeoutMs: 120_000 })

// The tests share nothing (each writes its own files), so they run at once: each is mostly a child process starting.
describe.concurrent("bulwark simulate", () => {
  it("exits 0 with a summary when every invariant holds, and writes JUnit", async () => {
    const junit = join(dir, "ok.xml")
    const r = await simulate("packages/simulator/examples/reference.ts", "--runs", "4", "--seed", "3", "--junit", junit)
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    expect(r.stdout).toContain("reference pipeline: 4 runs, seed 3")
    expect(r.stdout).toContain("all invariants held")
    expect(readFileSync(junit, "utf-8")).toContain(`failures="0"`)
  }, 300_000)

  it("exits 1 with the counterexample, a replay command, JSON and HTML", async () => {
    const html = join(dir, "bug.html")
    const regression = join(dir, "bug.test.ts")
    const r = await simulate("packages/simulator/examples/wrong-ack-first.ts", "--runs", "40", "--seed", "1", "--json", "--html", html, "--regression", regression)
    expect(r.code).toBe(1)
    const report = JSON.parse(r.stdout)
    expect(report.valid).toBe(false)
    expect(report.stats.lost).toBeGreaterThan(0)
    expect(report.violations[0].invariant).toBe("no-lost")
    expect(r.stderr).toContain("replay with: bulwark simulate packages/simulator/examples/wrong-ack-first.ts --seed 1 --path")
    expect(r.stderr).not.toContain("    at ")
    expect(readFileSync(html, "utf-8")).toContain("<svg")
    const test = readFileSync(regression, "utf-8")
    expect(test).toMatch(/import \{ simulation \} from "[./]+.*packages\/simulator\/examples\/wrong-ack-first\.js"/)
    expect(test).toContain("Simulator.runScenario(simulation, scenario)")
    const replay = await simulate("packages/simulator/examples/wrong-ack-first.ts", "--seed", "1", "--path", report.path, "--json")
    expect(replay.code).toBe(1)
    expect(JSON.parse(replay.stdout).counterexample.traceHash).toBe(report.counterexample.traceHash)
  }, 300_000)

  it("exits 2 on a module that cannot be loaded, without a stack trace", async () => {
    const r = await simulate("packages/simulator/examples/does-not-exist.ts")
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("bulwark simulate: cannot load")
    expect(r.stderr).not.toContain("    at ")
  }, 300_000)

  it("exits 2 on a module without a simulation and on bad usage", async () => {
    expect((await simulate("packages/simulator/examples/pipeline.ts")).code).toBe(2)
    expect((await simulate("packages/simulator/examples/reference.ts", "--runs", "0")).code).toBe(2)
  }, 300_000)
})
