/**
 * The cursor store contract, run against every driver: the memory store (over the memory outbox's database)
 * and the SQL store (PGlite, beside the SQL outbox). Atomic progress, fencing and the lease are what the
 * poller relies on for "no page skipped, none republished", so each driver must keep them the same way.
 */
import { Envelope } from "@bulwark/core"
import { Outbox } from "@bulwark/outbox"
import * as MemoryOutboxStore from "@bulwark/outbox/OutboxStore/Memory"
import { Database } from "@bulwark/sql"
import { describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Exit, Fiber, Option, Schema } from "effect"
import type { Service } from "../src/CursorStore.js"
import * as MemoryCursorStore from "../src/CursorStore/Memory.js"
import * as SqlCursorStore from "../src/CursorStore/Sql.js"

const Item = Schema.Struct({ n: Schema.Number })
const append = Outbox.append(Item)

/** A driver under test: the store, the outbox sharing its database, and how many outbox rows are committed. */
interface Subject {
  readonly store: Service
  readonly outbox: Outbox.Outbox["Type"]
  readonly rows: Effect.Effect<number>
}

const memory: Effect.Effect<Subject> = Effect.gen(function*() {
  const database = yield* MemoryOutboxStore.make({ name: "contract" })
  const store = yield* Effect.provideService(MemoryCursorStore.make, MemoryOutboxStore.MemoryOutboxStore, database)
  return { store, outbox: Outbox.fromStore(database), rows: Effect.map(database.rows, (rows) => rows.length) }
})

let tables = 0
const sql = Effect.gen(function*() {
  const table = `bulwark_cursor_contract_${Date.now().toString(36)}_${tables++}`
  const client = yield* SqlClient.SqlClient
  const outbox = yield* Outbox.make({ table: `${table}_outbox`, notify: false })
  const store = yield* SqlCursorStore.make({ table: `${table}_cursors` })
  const rows = client<{ n: number }>`SELECT count(*)::int AS n FROM ${client(`${table}_outbox`)}`.pipe(
    Effect.map((r) => r[0]!.n),
    Effect.orDie
  )
  return { store, outbox: Outbox.fromStore(outbox), rows } satisfies Subject
})

const drivers: ReadonlyArray<{ readonly name: string; readonly run: (test: (s: Subject) => Effect.Effect<void, unknown>) => Effect.Effect<void, unknown> }> = [
  { name: "memory", run: (test) => Effect.flatMap(memory, test) },
  {
    name: "sql (PGlite)",
    run: (test) => Effect.flatMap(sql, test).pipe(Effect.provide(Database.layerPglite()))
  }
]

const envelope = (n: number) => Envelope.make({ id: `item-${n}`, type: "item", source: "contract", subject: "items", data: { n } })

/** One page as the poller commits it: the outbox rows, then the cursor, in one transaction. */
const commitPage = (s: Subject, holder: string, cursor: string, items: ReadonlyArray<number>, after: Effect.Effect<void, unknown> = Effect.void) =>
  s.store.transaction(Effect.gen(function*() {
    const envelopes = yield* Effect.forEach(items, envelope)
    yield* append("contract.items", envelopes)
    yield* s.store.save("source", holder, cursor)
    yield* after
  })).pipe(Effect.provideService(Outbox.Outbox, s.outbox))

for (const driver of drivers) {
  describe(`cursor store contract: ${driver.name}`, () => {
    it.live("a page's rows and its cursor commit together, or neither does", () =>
      driver.run((s) =>
        Effect.gen(function*() {
          expect(yield* s.store.load("source")).toEqual(Option.none())
          expect(yield* s.store.acquire("source", "a", 30_000)).toBe(true)
          yield* commitPage(s, "a", "c1", [1, 2])
          expect(yield* s.store.load("source")).toEqual(Option.some("c1"))
          expect(yield* s.rows).toBe(2)
          // A failure after the save (a crash before the commit): the cursor stays, the rows vanish.
          const failed = yield* Effect.exit(commitPage(s, "a", "c2", [3, 4], Effect.fail("crash before commit")))
          expect(Exit.isFailure(failed)).toBe(true)
          expect(yield* s.store.load("source")).toEqual(Option.some("c1"))
          expect(yield* s.rows).toBe(2)
          // So the page is read again and committed once.
          yield* commitPage(s, "a", "c2", [3, 4])
          expect(yield* s.store.load("source")).toEqual(Option.some("c2"))
          expect(yield* s.rows).toBe(4)
          // Other sources keep their own cursor.
          expect(yield* s.store.load("other")).toEqual(Option.none())
        })
      ))

    it.live("the lease: one holder at a time, renewed, released, taken over once expired", () =>
      driver.run((s) =>
        Effect.gen(function*() {
          expect(yield* s.store.acquire("source", "a", 30_000)).toBe(true)
          expect(yield* s.store.acquire("source", "b", 30_000)).toBe(false)
          // Held already: acquiring again is a renewal.
          expect(yield* s.store.acquire("source", "a", 30_000)).toBe(true)
          expect(yield* s.store.renew("source", "a", 30_000)).toBe(true)
          expect(yield* s.store.renew("source", "b", 30_000)).toBe(false)
          // Giving it up hands it over at once; the one that gave it up cannot renew it.
          yield* s.store.release("source", "a")
          expect(yield* s.store.renew("source", "a", 30_000)).toBe(false)
          expect(yield* s.store.acquire("source", "b", 100)).toBe(true)
          // Releasing what one does not hold changes nothing.
          yield* s.store.release("source", "a")
          expect(yield* s.store.acquire("source", "a", 30_000)).toBe(false)
          // Expired: another instance takes it.
          yield* Effect.sleep("250 millis")
          expect(yield* s.store.acquire("source", "a", 30_000)).toBe(true)
          expect(yield* s.store.renew("source", "b", 30_000)).toBe(false)
        })
      ))

    it.live("fencing: a holder that lost the lease cannot commit a page, and nothing it wrote stays", () =>
      driver.run((s) =>
        Effect.gen(function*() {
          expect(yield* s.store.acquire("source", "a", 100)).toBe(true)
          yield* commitPage(s, "a", "c1", [1])
          yield* Effect.sleep("250 millis")
          expect(yield* s.store.acquire("source", "b", 30_000)).toBe(true)
          const stale = yield* Effect.flip(commitPage(s, "a", "c-stale", [2, 3]))
          expect(stale).toMatchObject({ _tag: "LeaseLost", source: "source", holder: "a" })
          expect(yield* s.store.load("source")).toEqual(Option.some("c1"))
          expect(yield* s.rows).toBe(1)
          // A save outside any lease (never acquired) is fenced too.
          expect(yield* Effect.flip(commitPage(s, "nobody", "c-x", [4]))).toMatchObject({ _tag: "LeaseLost" })
          // Past its lease but not taken over, the holder still commits: nobody else can have written.
          expect(yield* s.store.acquire("source", "b", 100)).toBe(true)
          yield* Effect.sleep("250 millis")
          yield* commitPage(s, "b", "c2", [5])
          expect(yield* s.store.load("source")).toEqual(Option.some("c2"))
          expect(yield* s.rows).toBe(2)
        })
      ))

    it.live("a takeover waits for a page's transaction in progress: the lease is not taken between fencing and commit", () =>
      driver.run((s) =>
        Effect.gen(function*() {
          expect(yield* s.store.acquire("source", "a", 100)).toBe(true)
          // Holder a saves, then its transaction is slow to commit, past the lease.
          const page = yield* Effect.fork(commitPage(s, "a", "c1", [1], Effect.sleep("300 millis")))
          yield* Effect.sleep("150 millis")
          const takeover = yield* Effect.fork(s.store.acquire("source", "b", 30_000))
          const committed = yield* Fiber.join(page)
          expect(committed).toBeUndefined()
          // b gets the source only after a's page committed (its lease had expired by then).
          expect(yield* Fiber.join(takeover)).toBe(true)
          expect(yield* s.store.load("source")).toEqual(Option.some("c1"))
          expect(yield* s.rows).toBe(1)
          expect(yield* Effect.flip(commitPage(s, "a", "c2", [2]))).toMatchObject({ _tag: "LeaseLost" })
        })
      ))
  })
}
