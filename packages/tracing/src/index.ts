/** Spans and metrics for every stage, as middleware and port decorators. */
export * as Tracing from "./Tracing.js"
/** W3C trace context carried inside envelopes. */
export * as Propagation from "./Propagation.js"
/** The metrics Bulwark reports. */
export * as Metrics from "./Metrics.js"
/** Keeps secrets and user-marked fields out of spans and logs. */
export * as Redaction from "./Redaction.js"
// The OpenTelemetry Node SDK wiring loads the SDK and its exporters, so it is not in this barrel:
// import * as Otel from "@bulwark/tracing/Otel".
