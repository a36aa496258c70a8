/**
 * Contract checks inside a service's own tests (vitest or any runner that reports a thrown error):
 *
 * ```ts
 * import { Testing } from "@bulwark/contracts"
 * it("keeps its contracts", () => Testing.assertContracts(contracts, { dir: "contracts" }))
 * ```
 */
import { Effect } from "effect"
import * as Check from "./Check.js"
import type * as Contract from "./Contract.js"
import * as Project from "./Project.js"

/** The contracts did not pass: the message is the full report. */
export class ContractsBroken extends Error {
  override readonly name = "ContractsBroken"
  constructor(readonly report: Check.Report) {
    super(`\n${Check.renderText(report)}`)
  }
}

/** Checks `services` against the committed files in `dir` (and `against`) and answers the report. */
export const checkContracts = (
  services: ReadonlyArray<Contract.Service>,
  options: { readonly dir: string } & Project.CheckOptions
): Promise<Check.Report> => Effect.runPromise(Project.checkAgainst(services, options.dir, options))

/**
 * Fails (throws {@link ContractsBroken} with the report: field, direction, consumer, fix) unless every
 * consumer reads what its producers write and every version is compatible with its history. `frozen` (default
 * true here) also fails on a committed file that is out of date, so a test run catches a forgotten export.
 */
export const assertContracts = async (
  services: ReadonlyArray<Contract.Service>,
  options: { readonly dir: string } & Project.CheckOptions
): Promise<Check.Report> => {
  const report = await checkContracts(services, { frozen: true, ...options })
  if (!report.ok) throw new ContractsBroken(report)
  return report
}
