/**
 * A self-contained HTML page with the visual timeline of a run: one lane per component, one mark per event,
 * faults in red, the violation marked where it was detected.
 */
import type { Lane } from "./History.js"
import type { Report, RunResult } from "./Simulator.js"

const lanes: ReadonlyArray<Lane> = [
  "sender",
  "webhook",
  "transport",
  "consumer",
  "idempotency",
  "retry",
  "breaker",
  "database",
  "relay",
  "dead-letter",
  "downstream",
  "node",
  "fault"
]

const escape = (s: string): string =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

/** Renders the timeline of a run (usually the minimal counterexample) with the report's summary. */
export const render = (report: Report, run: RunResult): string => {
  const events = run.history.events
  const end = Math.max(1, run.virtualTime, ...events.map((e) => e.t))
  const width = 1200
  const laneHeight = 40
  const left = 110
  const x = (t: number) => left + (t / end) * (width - left - 20)
  const marks = events.map((e) => {
    const y = lanes.indexOf(e.lane) * laneHeight + laneHeight / 2 + 20
    const color = e.lane === "fault" ? "#d33" : e.kind === "effect" ? "#2a2" : "#357"
    const title = `${e.t.toFixed(3)}ms ${e.lane} ${e.kind}${e.ref === undefined ? "" : ` ${e.ref}`} ${JSON.stringify(e.data ?? {})}`
    return `<circle cx="${x(e.t).toFixed(1)}" cy="${y}" r="5" fill="${color}"><title>${escape(title)}</title></circle>`
  })
  const violation = report.violations[0]
  const violationMark = violation === undefined
    ? ""
    : `<line x1="${x(violation.at).toFixed(1)}" x2="${x(violation.at).toFixed(1)}" y1="10" y2="${lanes.length * laneHeight + 20}" stroke="#d33" stroke-dasharray="4"/>`
  const laneLabels = lanes.map((lane, i) =>
    `<text x="8" y="${i * laneHeight + laneHeight / 2 + 24}" font-size="13">${lane}</text>` +
    `<line x1="${left}" x2="${width - 20}" y1="${i * laneHeight + laneHeight / 2 + 20}" y2="${i * laneHeight + laneHeight / 2 + 20}" stroke="#ddd"/>`
  )
  return [
    "<!doctype html>",
    `<html><head><meta charset="utf-8"><title>${escape(report.simulation)} — Bulwark simulator</title>`,
    "<style>body{font-family:system-ui,sans-serif;margin:24px} pre{background:#f6f6f6;padding:12px;overflow:auto}</style></head><body>",
    `<h1>${escape(report.simulation)}: ${report.valid ? "valid" : "invalid"}</h1>`,
    violation === undefined ? "" : `<p><b>${escape(violation.invariant)}</b>: ${escape(violation.message)} (t=${violation.at.toFixed(3)}ms)</p>`,
    `<p>seed ${report.seed}${report.path === undefined ? "" : `, path ${escape(report.path)}`} — trace ${run.traceHash}, ${events.length} events, ${run.virtualTime.toFixed(0)} virtual ms</p>`,
    `<svg width="${width}" height="${lanes.length * laneHeight + 40}" xmlns="http://www.w3.org/2000/svg">`,
    ...laneLabels,
    violationMark,
    ...marks,
    "</svg>",
    "<h2>Per-message timeline</h2>",
    `<pre>${escape(report.counterexample?.timeline.join("\n") ?? "")}</pre>`,
    "<h2>Report</h2>",
    `<pre>${escape(JSON.stringify({ ...report, counterexample: undefined }, null, 2))}</pre>`,
    "</body></html>",
    ""
  ].join("\n")
}
