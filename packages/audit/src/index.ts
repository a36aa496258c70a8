/** The audit log port, its shared settings and default redaction. */
export * as AuditLog from "./AuditLog.js"
/** Replay from history: a period of published messages through a handler or to a topic. */
export * as History from "./History.js"
/** The in-process driver. */
export * as MemoryAuditLog from "./AuditLog/Memory.js"
