import { defaultServerConditions } from "vite"
import { defineConfig } from "vitest/config"

// Inside the repository, packages resolve to their TypeScript sources through the "@bulwark/source" export
// condition; published packages resolve to dist/. Child processes the tests start (the CLI, relay
// processes) inherit the condition through NODE_OPTIONS.
const sourceCondition = "--conditions=@bulwark/source"
if (!(process.env.NODE_OPTIONS ?? "").includes(sourceCondition)) {
  process.env.NODE_OPTIONS = [process.env.NODE_OPTIONS, sourceCondition].filter(Boolean).join(" ")
}

// vitest's own default (vite's server conditions without "module"), with the source condition first.
const conditions = ["@bulwark/source", ...defaultServerConditions.filter((c) => c !== "module")]

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ["@bulwark/source"] } },
  test: {
    include: ["packages/*/test/**/*.test.ts", "examples/*/test/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Bundles the CLI once per run for the tests that spawn it (see the file for why).
    globalSetup: ["packages/cli/test/support/bundle.ts"],
    pool: "forks",
    // Most suites wait on brokers, databases and child processes rather than compute; vitest's default of
    // one worker per spare core would run them one file at a time on a 2-core machine.
    maxWorkers: 3,
    minWorkers: 1,
    reporters: ["default"],
    sequence: { concurrent: false }
  }
})
