import { describe, expect, it } from "vitest"
import { execFileSync, spawnSync } from "node:child_process"
import { bin } from "./support/bin.js"

describe("bulwark binary", () => {
  it("prints its version", () => {
    expect(execFileSync(process.execPath, [bin, "--version"], { encoding: "utf-8" }).trim()).toBe("0.1.0")
  })

  it("prints help and exits 0", () => {
    const result = spawnSync(process.execPath, [bin, "--help"], { encoding: "utf-8" })
    expect(result.status).toBe(0)
    expect(result.stdout).toContain("USAGE")
  })

  it("exits 2 on bad usage with a message and no stack trace", () => {
    const result = spawnSync(process.execPath, [bin, "--no-such-flag"], { encoding: "utf-8" })
    expect(result.status).toBe(2)
    expect(result.stdout + result.stderr).toMatch(/--no-such-flag|Invalid subcommand/)
    expect(result.stderr).not.toContain("    at ")
  })

  it("answers an unknown subcommand with exit 2, even with --help", () => {
    for (const args of [["journal"], ["journal", "--help"]]) {
      const result = spawnSync(process.execPath, [bin, ...args], { encoding: "utf-8" })
      expect(result.status, args.join(" ")).toBe(2)
      expect(result.stderr).toContain('unknown command "journal"')
      expect(result.stdout).not.toContain("USAGE")
    }
  })

  it("prints help without colours when the output is not a terminal", () => {
    const result = spawnSync(process.execPath, [bin, "--help"], { encoding: "utf-8", env: { ...process.env, NO_COLOR: "1" } })
    expect(result.status).toBe(0)
    expect(result.stdout).toContain("COMMANDS")
    expect(result.stdout).not.toContain("\u001b[")
  })
})
