/** Envelope, CloudEvents encoding and decoding. */
export * as Envelope from "./Envelope.js"
/** The error taxonomy: classification and dead-letter category. */
export * as Failure from "./Failure.js"
/** Messages as transports carry them, and how a delivery is settled. */
export * as Delivery from "./Delivery.js"
/** Handlers, middleware and their checked order. */
export * as Handler from "./Handler.js"
/** Runs a handler over a stream of deliveries. */
export * as Pipeline from "./Pipeline.js"
/** One cheap observer hook through which packages announce what they do. */
export * as Observe from "./Observe.js"
/** Supervision of long-running loops: backoff on transient faults, health, a loud end on fatal ones. */
export * as Supervise from "./Supervise.js"
/** Span attribute names, span helpers and the shared metrics every package instruments itself with. */
export * as Telemetry from "./Telemetry.js"
/** W3C Trace Context over plain header records. */
export * as TraceContext from "./TraceContext.js"
/** Keeps secrets and user-marked fields out of span attributes and logs. */
export * as Redaction from "./Redaction.js"
/** The optional audit log every package writes what happened to each event to. */
export * as AuditLog from "./AuditLog.js"
/** Which payload schemas a process uses, reported for contract checks. */
export * as SchemaUse from "./SchemaUse.js"
