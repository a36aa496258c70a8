/** The transactional outbox: append in the caller's transaction. */
export * as Outbox from "./Outbox.js"
/** The relay that publishes outbox rows. */
export * as Relay from "./Relay.js"
/** The transactional inbox: process a message id once per consumer. */
export * as Inbox from "./Inbox.js"
/** The outbox store port: the protocol `Outbox.append` and `Relay` run over. */
export * as OutboxStore from "./OutboxStore.js"
/** The SQL outbox store (PGlite and PostgreSQL). */
export * as SqlOutboxStore from "./OutboxStore/Sql.js"
/** The in-process outbox store (Effect `Clock` time, transactions with `onCommit`), for tests and the simulator. */
export * as MemoryOutboxStore from "./OutboxStore/Memory.js"
