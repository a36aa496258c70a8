import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const root = fileURLToPath(new URL("../../..", import.meta.url))

// Cli.ts → Commands.ts → Transports.ts used to import Cli.ts back (for CliExit): importing Transports first
// failed with "Cannot access 'publisherFromEnv' before initialization". Plain Node ESM, as users load it.
describe("module graph", () => {
  for (const module of ["@bulwark/cli/Transports", "@bulwark/cli/Commands", "@bulwark/cli/CliExit", "@bulwark/cli"]) {
    it(`${module} can be the first module imported`, () => {
      const result = spawnSync(process.execPath, ["--conditions=@bulwark/source", "--import", "tsx", "--input-type=module", "-e",
        `const m = await import(${JSON.stringify(module)}); console.log(Object.keys(m).length > 0)`], { cwd: root, encoding: "utf8", timeout: 60_000 })
      expect(result.stderr).not.toContain("before initialization")
      expect(result.status, result.stderr).toBe(0)
      expect(result.stdout.trim()).toBe("true")
    })
  }
})
