/** The Amazon Kinesis Data Streams transport driver. */
export * as KinesisTransport from "./KinesisTransport.js"
/** Where consumer groups keep their shard leases and checkpoints; the in-memory store. */
export * as CheckpointStore from "./CheckpointStore.js"
// The SQL store (PostgreSQL, PGlite) loads @effect/sql, so it is not in this barrel: import it from
// "@bulwark/transport-kinesis/CheckpointStore/Sql".
