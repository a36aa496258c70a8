/** The shared-limit check over several processes, for the drivers that share across processes. */
import { expect } from "@effect/vitest"
import type { Args } from "./support/limiterProcess.js"
import { multiProcess } from "./support/multiProcess.js"
import { maxInAnyWindow } from "./contract.js"

/**
 * Four processes hammer one sliding-window limit of `limit` per `windowMillis` for a few seconds, each with
 * `fibers` fibers waiting for permits: enough reservations queued ahead (several windows' worth) that a
 * process descheduled for a while on a loaded machine does not leave the limit idle. The grants (decided on the store's clock) never exceed the limit in any window, and the rate
 * over whole windows in the middle of the run is within 5 % of the limit.
 */
export const fourProcesses = async (args: Omit<Args, "durationMillis"> & { readonly durationMillis?: number }) => {
  const { limit, windowMillis } = args
  const durationMillis = args.durationMillis ?? 3_000
  const run = await multiProcess(4, { ...args, durationMillis })
  expect(maxInAnyWindow(run.grants, windowMillis)).toBeLessThanOrEqual(limit)
  // Whole windows, leaving out the first and the last two (start-up and the end of the demand).
  const from = run.startAt + windowMillis
  const windows = Math.floor(durationMillis / windowMillis) - 3
  const inside = (t: number) => t >= from && t < from + windows * windowMillis
  const expected = windows * limit
  const granted = run.grants.filter(inside).length
  const called = run.calls.filter(inside).length
  // The calls as the processes made them, after waking from their waits, are reported, not asserted: their
  // spacing carries each process's scheduling delay on a loaded machine, which no limiter can see.
  console.log(
    `${args.driver}: 4 processes, limit ${limit}/${windowMillis} ms: ${granted} grants and ${called} calls in ${windows} windows ` +
      `(expected ${expected}); most grants in any window ${maxInAnyWindow(run.grants, windowMillis)}, ` +
      `most calls in any window ${maxInAnyWindow(run.calls, windowMillis)}`
  )
  expect(Math.abs(granted - expected) / expected).toBeLessThanOrEqual(0.05)
}
