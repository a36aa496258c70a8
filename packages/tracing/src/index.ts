/** W3C trace context carried inside messages (re-exported from `@bulwark/core`). */
export * as Propagation from "./Propagation.js"
/** The metrics shared by Bulwark packages (re-exported from `@bulwark/core`). */
export * as Metrics from "./Metrics.js"
/** Keeps secrets and user-marked fields out of spans and logs (re-exported from `@bulwark/core`). */
export * as Redaction from "./Redaction.js"
// The OpenTelemetry Node SDK wiring loads the SDK and its exporters, so it is not in this barrel:
// import * as Otel from "@bulwark/tracing/Otel".
/** One trace as a self-contained HTML waterfall, from an OTLP/JSON export. */
export * as Waterfall from "./Waterfall.js"
