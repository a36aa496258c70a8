/** The cursor store port: a source's cursor and its lease. */
export * as CursorStore from "./CursorStore.js"
/** The poller: pages from a source, published through the outbox with the cursor in the same transaction. */
export * as Poller from "./Poller.js"
/** Pages and the HTTP adapters (`?since=`, next cursor, ETag, `Link: rel=next`). */
export * as Source from "./Source.js"
