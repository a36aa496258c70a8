/** The transactional outbox: append in the caller's transaction. */
export * as Outbox from "./Outbox.js"
/** The relay that publishes outbox rows. */
export * as Relay from "./Relay.js"
/** The transactional inbox: process a message id once per consumer. */
export * as Inbox from "./Inbox.js"
