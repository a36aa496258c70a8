/**
 * The in-process cursor store, for tests and the deterministic simulator. It lives in the memory outbox's
 * database (`@bulwark/outbox/OutboxStore/Memory`): `transaction` is that store's transaction, and `save` stages
 * the cursor with `onCommit`, so a page's outbox rows and its cursor appear together or not at all (a crash
 * before the commit drops both). Lease calls run as transactions of their own: they wait for a transaction in
 * progress, as the SQL store's upsert waits for the row lock a pending `save` holds, so a lease is never taken
 * over between a save's fencing check and its commit. Time is Effect's `Clock` only.
 */
import { MemoryOutboxStore, MemoryTransaction, type MemoryOutboxStoreService } from "@bulwark/outbox/OutboxStore/Memory"
import { Clock, Effect, Layer, Option } from "effect"
import { CursorStore, LeaseLost, type Service } from "../CursorStore.js"

interface Row {
  cursor: string | undefined
  holder: string | undefined
  leaseUntil: number
}

/** Makes a store over the given memory outbox store (the database it shares transactions with). */
export const unsafeMake = (database: MemoryOutboxStoreService, name = "memory"): Service => {
  const rows = new Map<string, Row>()
  const row = (source: string): Row => {
    let found = rows.get(source)
    if (found === undefined) {
      found = { cursor: undefined, holder: undefined, leaseUntil: 0 }
      rows.set(source, found)
    }
    return found
  }
  // A lease call is a transaction of its own: it waits while a page's transaction holds the database.
  const locked = <A>(f: (now: number) => A) =>
    database.transaction(Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => f(now))))

  return {
    name,
    load: (source) => Effect.sync(() => Option.fromNullable(rows.get(source)?.cursor)),
    acquire: (source, holder, leaseMillis) =>
      locked((now) => {
        const r = row(source)
        if (r.holder !== undefined && r.holder !== holder && r.leaseUntil >= now) return false
        r.holder = holder
        r.leaseUntil = now + leaseMillis
        return true
      }),
    renew: (source, holder, leaseMillis) =>
      locked((now) => {
        const r = rows.get(source)
        if (r === undefined || r.holder !== holder) return false
        r.leaseUntil = now + leaseMillis
        return true
      }),
    release: (source, holder) =>
      locked(() => {
        const r = rows.get(source)
        if (r !== undefined && r.holder === holder) {
          r.holder = undefined
          r.leaseUntil = 0
        }
      }),
    transaction: (effect) => database.transaction(effect),
    // Still ours even past the lease when nobody took it over, as in the SQL store. Outside a transaction
    // the write is immediate; inside one it waits for the commit.
    save: (source, holder, cursor) =>
      Effect.flatMap(Effect.serviceOption(MemoryTransaction), (tx) => {
        const r = rows.get(source)
        if (r === undefined || r.holder !== holder) return Effect.fail(new LeaseLost({ source, holder }))
        const write = () => {
          r.cursor = cursor
        }
        return Option.isSome(tx) ? tx.value.onCommit(write) : Effect.sync(write)
      })
  }
}

/** Makes a store over the memory outbox store in context, so pages commit with their outbox rows. */
export const make: Effect.Effect<Service, never, MemoryOutboxStore> = Effect.map(
  MemoryOutboxStore,
  (database) => unsafeMake(database, `memory:${database.name}`)
)

/** Provides the {@link CursorStore} over the memory outbox store in context. */
export const layer: Layer.Layer<CursorStore, never, MemoryOutboxStore> = Layer.effect(CursorStore, make)
