/**
 * Progress on stderr: a redrawn bar on a terminal, a plain line per phase change or tenth of the work
 * otherwise (CI logs, pipes), and nothing when turned off. stdout stays reserved for the summary.
 */
import { Duration, Effect } from "effect"

/** One reading of the run's progress. */
export interface Snapshot {
  readonly phase: string
  readonly done: number
  readonly total: number
  readonly detail: string
}

/** Where progress goes. */
export type Mode = "bar" | "lines" | "off"

/** `bar` on a terminal, `lines` otherwise. */
export const detectMode = (): Mode => (process.stderr.isTTY === true ? "bar" : "lines")

const width = 28

const bar = (snapshot: Snapshot): string => {
  const ratio = snapshot.total === 0 ? 1 : Math.min(1, snapshot.done / snapshot.total)
  const filled = Math.round(ratio * width)
  const percent = String(Math.floor(ratio * 100)).padStart(3)
  return `${snapshot.phase.padEnd(9)} [${"█".repeat(filled)}${"░".repeat(width - filled)}] ${percent}% ${snapshot.detail}`
}

/**
 * Reports `read()` until interrupted (fork it); the final reading is reported when the fiber ends, so the
 * last line or frame is never stale.
 */
export const report = (mode: Mode, read: () => Snapshot): Effect.Effect<never> => {
  if (mode === "off") return Effect.never
  let lastPhase = ""
  let lastTenth = -1
  const draw = Effect.sync(() => {
    const snapshot = read()
    if (mode === "bar") {
      process.stderr.write(`\r\x1b[2K${bar(snapshot)}`)
      return
    }
    const tenth = snapshot.total === 0 ? 10 : Math.floor((10 * snapshot.done) / snapshot.total)
    if (snapshot.phase !== lastPhase || tenth !== lastTenth) {
      lastPhase = snapshot.phase
      lastTenth = tenth
      process.stderr.write(`${bar(snapshot)}\n`)
    }
  })
  const finish = Effect.zipRight(draw, Effect.sync(() => mode === "bar" && process.stderr.write("\n")))
  return draw.pipe(
    Effect.zipRight(Effect.sleep(Duration.millis(mode === "bar" ? 80 : 250))),
    Effect.forever,
    Effect.onInterrupt(() => finish)
  )
}
