/** The idempotency port, its errors, metrics and `run` for any effect. */
export * as IdempotencyStore from "./IdempotencyStore.js"
/** The `idempotent` middleware and its key strategies. */
export * as Idempotent from "./Idempotent.js"
/** The in-process driver (Effect `Clock` time). */
export * as MemoryIdempotencyStore from "./IdempotencyStore/Memory.js"
/** The SQL driver (PGlite and PostgreSQL). */
export * as SqlIdempotencyStore from "./IdempotencyStore/Sql.js"
// The Redis driver (Lua claim, PEXPIRE retention) loads ioredis, so it is not in this barrel: import it from
// "@bulwark/idempotency/IdempotencyStore/Redis".
