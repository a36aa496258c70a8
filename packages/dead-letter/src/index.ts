/** The dead-letter port, its entries, filters and alerts. */
export * as DeadLetterStore from "./DeadLetterStore.js"
/** The `deadLetter` middleware and the `.dlq` drain. */
export * as DeadLetter from "./DeadLetter.js"
/** Rate-limited, idempotent replay to the origin topic. */
export * as Replay from "./Replay.js"
/** The in-process driver. */
export * as MemoryDeadLetterStore from "./DeadLetterStore/Memory.js"
/** The SQL driver (PGlite and PostgreSQL). */
export * as SqlDeadLetterStore from "./DeadLetterStore/Sql.js"
