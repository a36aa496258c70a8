/** The embedded (PGlite) and real PostgreSQL layers, and LISTEN/NOTIFY. */
export * as Database from "./Database.js"
/** Migrations for Bulwark's own tables. */
export * as Migrations from "./Migrations.js"
/** Lost connections (also during COMMIT/ROLLBACK) as typed, transient failures. */
export * as Transaction from "./Transaction.js"
