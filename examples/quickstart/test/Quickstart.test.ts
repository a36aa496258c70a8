import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Quickstart from "../src/Quickstart.js"

describe("quick start", () => {
  it.live("applies every payment exactly once despite injected duplicates and transient failures", () =>
    Effect.gen(function*() {
      const report = yield* Quickstart.run({ events: 300, seed: 7 })
      expect(report.duplicatesInjected).toBeGreaterThan(0)
      expect(report.transientFailures).toBeGreaterThan(0)
      expect(report.published).toBe(report.distinct + report.duplicatesInjected)
      // Each duplicate is acked without its effect; each transient failure costs one redelivery.
      expect(report.duplicatesSuppressed).toBe(report.duplicatesInjected)
      expect(report.redelivered).toBe(report.transientFailures)
      expect(report.acked).toBe(report.published)
      expect(report.effectsApplied).toBe(report.distinct)
      expect(report.exactlyOnce).toBe(true)
      expect(Quickstart.summarize(report)).toContain("exactly once")
    }))

  it.live("one seed gives the same faults", () =>
    Effect.gen(function*() {
      const [a, b] = yield* Effect.all([Quickstart.run({ events: 100, seed: 3 }), Quickstart.run({ events: 100, seed: 3 })])
      expect([a.duplicatesInjected, a.transientFailures]).toEqual([b.duplicatesInjected, b.transientFailures])
    }))
})
