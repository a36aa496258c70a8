/**
 * Every mutant of the real packages is caught: the reference pipeline, checked against the mutated package,
 * breaks an invariant the mutant is expected to break, with a counterexample of at most 10 events. Each
 * mutant runs in its own process (a loaded module cannot be unloaded), two at a time.
 */
import { describe, expect, it } from "@effect/vitest"
import { mutants } from "./mutants/catalogue.js"
import { type Outcome, pool, runMutant } from "./mutants/mutation.js"

describe("mutants of the real packages", () => {
  it(`all ${mutants.length} are caught, named and shrunk to ≤ 10 events`, async () => {
    const outcomes: Array<Outcome | { id: string; error: string }> = await pool(mutants, 2, (mutant) =>
      runMutant(mutant, 1).catch((error: unknown) => ({ id: mutant.id, error: String(error).slice(0, 1_000) })))
    const failed = outcomes.filter((o): o is { id: string; error: string } => "error" in o).map((o) => `${o.id}: ${o.error}`)
    expect(failed).toEqual([])
    const missed = (outcomes as Array<Outcome>)
      .filter((o) => !o.caught || !o.expected.includes(o.invariant ?? "") || (o.size ?? 99) > 10)
      .map((o) => `${o.id}: caught=${o.caught} by ${o.invariant ?? "-"} (expected ${o.expected.join("|")}), size ${o.size ?? "-"}: ${o.message ?? ""}`)
    expect(missed).toEqual([])
  }, 900_000)
})
