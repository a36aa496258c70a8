/** The Postgres queue-table transport (SKIP LOCKED claiming, LISTEN/NOTIFY wake-up). */
export * as PostgresTransport from "./PostgresTransport.js"
