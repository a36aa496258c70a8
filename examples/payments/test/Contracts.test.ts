import { AsyncApi, Check, Project, Testing } from "@bulwark/contracts"
import { run } from "@bulwark/cli/Cli"
import { NodeContext } from "@effect/platform-node"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, describe, expect, it, vi } from "vitest"
import { contracts } from "../src/Contracts.js"

const example = fileURLToPath(new URL("..", import.meta.url))
const dir = join(example, "contracts")
const bin = fileURLToPath(new URL("../../../packages/cli/bin/bulwark.mjs", import.meta.url))
const scratch = mkdtempSync(join(tmpdir(), "payments-contracts-"))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

/** The real `bulwark` binary, as CI runs it, from the example's directory. */
const bulwark = (args: ReadonlyArray<string>): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd: example, env: { ...process.env, NO_COLOR: "1" } })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk) => (stdout += chunk))
    child.stderr.on("data", (chunk) => (stderr += chunk))
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })

/** The same command line in this process (what the binary runs, without its start-up). */
const inProcess = async (args: ReadonlyArray<string>) => {
  const lines: Array<string> = []
  const log = vi.spyOn(console, "log").mockImplementation((...a: Array<unknown>) => void lines.push(a.join(" ")))
  const error = vi.spyOn(console, "error").mockImplementation((...a: Array<unknown>) => void lines.push(a.join(" ")))
  const cwd = process.cwd()
  process.chdir(example)
  try {
    const code = await Effect.runPromise(run(["node", "bulwark", ...args]).pipe(Effect.provide(NodeContext.layer)) as Effect.Effect<number>)
    return { code, output: lines.join("\n") }
  } finally {
    process.chdir(cwd)
    log.mockRestore()
    error.mockRestore()
  }
}

describe("payments contracts", () => {
  it("the committed contract files and AsyncAPI document are what the code declares, and every consumer reads its producers", async () => {
    const report = await Testing.assertContracts(contracts, { dir })
    expect(report.cases.length).toBeGreaterThanOrEqual(6)
    const files = await Effect.runPromise(Project.readDir(dir))
    expect(files.map((f) => f.service)).toEqual(["bank", "ingress", "ledger", "orders", "shipping"])
    const committed = JSON.parse(readFileSync(join(dir, "asyncapi.json"), "utf8"))
    expect(committed).toEqual(JSON.parse(JSON.stringify(AsyncApi.make(files, { title: "Payments example", version: "1.0.0" }))))
  })

  it("`bulwark contracts check` passes on the flagship (exit 0) and writes a JUnit report", async () => {
    const junit = join(scratch, "contracts.xml")
    const result = await bulwark(["contracts", "check", "src/Contracts.ts", "--dir", "contracts", "--frozen", "--junit", junit])
    expect(result.stderr).toBe("")
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/contracts compatible: \d+ checks/)
    expect(readFileSync(junit, "utf8")).toMatch(/<testsuite name="bulwark contracts" tests="\d+" failures="0">/)
  }, 120_000)

  it("a planted breaking producer change fails before run time (exit 1) naming the field and the consumer", async () => {
    const result = await bulwark(["contracts", "check", "test/fixtures/breaking.contracts.ts", "--dir", "contracts"])
    expect(result.code).toBe(1)
    expect(result.stdout).toContain("BREAKING order-paid: producer orders (com.example.order.paid v2) → consumer shipping (group shipping)")
    expect(result.stdout).toContain('field amount: the reader requires "amount", which the writer does not write')
    expect(result.stdout).toContain("BACKWARD: v2 reading data written with v1")
    expect(result.stderr).toContain("field amount (producer orders (com.example.order.paid v2) → consumer shipping (group shipping))")
    expect(result.stderr).not.toContain("    at ")
  }, 120_000)

  it("the compatible change passes (exit 0), reporting only that the committed file needs an export", async () => {
    const result = await inProcess(["contracts", "check", "test/fixtures/compatible.contracts.ts", "--dir", "contracts"])
    expect(result.code).toBe(0)
    expect(result.output).toContain("warning (contract file): service orders")
    expect(result.output).not.toContain("BREAKING")
    // --frozen turns the stale file into a failure: CI catches a forgotten export.
    expect((await inProcess(["contracts", "check", "test/fixtures/compatible.contracts.ts", "--dir", "contracts", "--frozen"])).code).toBe(1)
  }, 60_000)

  it("can the order service deploy the breaking change? Not against shipping's published file", async () => {
    const report = await Effect.runPromise(Project.checkAgainst(
      (await import("./fixtures/breaking.contracts.js")).contracts.filter((s) => s.name === "orders"),
      join(scratch, "orders-only"),
      { against: [join(dir, "shipping.contract.json")] }
    ))
    expect(report.ok).toBe(false)
    expect(Check.renderText(report)).toContain("consumer shipping (group shipping)")
  })

  it("`bulwark contracts diff` shows the change and its verdict per mode; usage errors exit 2", async () => {
    const exported = join(scratch, "v2")
    await inProcess(["contracts", "export", "test/fixtures/compatible.contracts.ts", "--dir", exported])
    const diff = await inProcess(["contracts", "diff", join(dir, "orders.contract.json"), join(exported, "orders.contract.json")])
    expect(diff.code).toBe(0)
    expect(diff.output).toContain("order-paid/com.example.order.paid v1 → v2 (BACKWARD)")
    expect(diff.output).toContain("verdict: BACKWARD ok, FORWARD breaking, FULL breaking")
    const full = await inProcess(["contracts", "diff", "--mode", "FULL", join(dir, "orders.contract.json"), join(exported, "orders.contract.json")])
    expect(full.code).toBe(1)
    expect((await inProcess(["contracts", "check", "no/such/module.ts"])).code).toBe(2)
    expect((await inProcess(["contracts", "diff", join(dir, "orders.contract.json"), join(dir, "asyncapi.json")])).code).toBe(2)
  }, 60_000)
})
