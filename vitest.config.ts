import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts", "examples/*/test/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Most suites wait on brokers, databases and child processes rather than compute; vitest's default of
    // one worker per spare core would run them one file at a time on a 2-core machine.
    maxWorkers: 3,
    minWorkers: 1,
    reporters: ["default"],
    sequence: { concurrent: false }
  }
})
