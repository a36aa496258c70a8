/**
 * The partitioned relay's own bookkeeping on PGlite and PostgreSQL: how relays share the partitions (each
 * about its share, a newcomer served by the others handing back their excess between rounds) and how a
 * stopped relay's partitions pass to the others once their lease has expired. The delivery guarantees
 * (order per key, takeover, retention, dead rows) are in the contract suite, run in both modes.
 */
import type { Database } from "@bulwark/sql"
import { expect, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"
import * as Outbox from "../src/Outbox.js"
import { type DatabaseLayer, dropOutbox, engines, uniqueTable } from "./helpers.js"

const encoder = new TextEncoder()

const suite = (name: string, database: DatabaseLayer) =>
  layer(database, { excludeTestServices: true, timeout: "60 seconds" })(`partitioned relays: ${name}`, (it) => {
    const fresh = (label: string) =>
      Effect.gen(function*() {
        const table = uniqueTable(label)
        const store = yield* Outbox.make({ table, partitioned: true }).pipe(Effect.orDie)
        yield* Effect.addFinalizer(() => dropOutbox(table))
        const sql = yield* SqlClient.SqlClient
        const owners = Effect.map(
          sql<{ owner: string | null; n: number }>`SELECT owner, count(*)::int AS n FROM ${sql(`${table}_partitions`)}
            GROUP BY owner`,
          (rows) => Object.fromEntries(rows.map((r) => [r.owner ?? "none", r.n]))
        ).pipe(Effect.orDie)
        return { store, sql, owners, table }
      })

    it.scoped("relays share the partitions: a newcomer gets half as the holder hands back its excess; a stopped relay's lapse to the others", () =>
      Effect.gen(function*() {
        const { owners, store } = yield* fresh("balance")
        const lease = 60_000
        yield* store.claim({ relayId: "a", limit: 10, leaseMillis: lease })
        expect(yield* owners).toEqual({ a: 32 })
        // b registers and finds nothing free; a hands back its excess at its next balancing, b takes it.
        yield* store.claim({ relayId: "b", limit: 10, leaseMillis: 3_000 })
        expect(yield* owners).toEqual({ a: 32 })
        yield* Effect.sleep("150 millis")
        yield* store.claim({ relayId: "a", limit: 10, leaseMillis: lease })
        expect(yield* owners).toEqual({ a: 16, none: 16 })
        yield* store.claim({ relayId: "b", limit: 10, leaseMillis: 3_000 })
        expect(yield* owners).toEqual({ a: 16, b: 16 })
        // A third relay: shares of 11.
        yield* store.claim({ relayId: "c", limit: 10, leaseMillis: lease })
        yield* Effect.sleep("150 millis")
        yield* store.claim({ relayId: "a", limit: 10, leaseMillis: lease })
        yield* store.claim({ relayId: "b", limit: 10, leaseMillis: 3_000 })
        yield* store.claim({ relayId: "c", limit: 10, leaseMillis: lease })
        expect(yield* owners).toEqual({ a: 11, b: 11, c: 10 })
        // b stops claiming: once its lease and registration lapse, a and c take its partitions.
        yield* Effect.sleep("3100 millis")
        yield* store.claim({ relayId: "a", limit: 10, leaseMillis: lease })
        yield* store.claim({ relayId: "c", limit: 10, leaseMillis: lease })
        expect(yield* owners).toEqual({ a: 16, c: 16 })
      }))

    it.scoped("a relay reads only its partitions; the rows of a key are in one partition", () =>
      Effect.gen(function*() {
        const { sql, store } = yield* fresh("split")
        const messages = Array.from({ length: 200 }, (_, i) => ({
          id: `m-${i}`,
          key: i % 5 === 0 ? "" : `k-${i % 40}`,
          payload: encoder.encode(`m-${i}`),
          headers: {}
        }))
        yield* sql.withTransaction(store.appendMessages("t", messages)).pipe(Effect.orDie)
        yield* store.claim({ relayId: "a", limit: 1, leaseMillis: 60_000 })
        yield* store.claim({ relayId: "b", limit: 1, leaseMillis: 60_000 })
        yield* Effect.sleep("150 millis")
        const a = yield* store.claim({ relayId: "a", limit: 500, leaseMillis: 60_000 })
        const b = yield* store.claim({ relayId: "b", limit: 500, leaseMillis: 60_000 })
        const seen = [...a, ...b].map((r) => r.message.id)
        // Together they read every row once; each in id order; no key on both sides.
        expect(new Set(seen).size).toBe(200)
        expect(seen.length).toBe(200)
        for (const side of [a, b]) expect(side.map((r) => r.id)).toEqual([...side.map((r) => r.id)].sort((x, y) => x - y))
        const keysOf = (rows: typeof a) => new Set(rows.map((r) => r.message.key).filter((k) => k !== ""))
        for (const key of keysOf(a)) expect(keysOf(b).has(key)).toBe(false)
        expect(a.length).toBeGreaterThan(0)
        expect(b.length).toBeGreaterThan(0)
      }))

    it.scoped("relays of the other mode on one table: a row-leasing claim takes nothing while partitions are leased, a partitioned claim skips leased rows and their keys", () =>
      Effect.gen(function*() {
        const { sql, store, table } = yield* fresh("modes")
        const byRow = yield* Outbox.make({ table }).pipe(Effect.orDie)
        const message = (id: string, key: string) => ({ id, key, payload: encoder.encode(id), headers: {} })
        yield* sql.withTransaction(byRow.appendMessages("t", [message("a1", "a"), message("b1", "b"), message("a2", "a"), message("n1", "")]))
          .pipe(Effect.orDie)
        // A row-leasing relay claims a1 first (the oldest row of a key); a partitioned relay then starts.
        const first = yield* byRow.claim({ relayId: "rows", limit: 1, leaseMillis: 60_000 })
        expect(first.map((r) => r.message.id)).toEqual(["a1"])
        const partitioned = yield* store.claim({ relayId: "parts", limit: 10, leaseMillis: 60_000 })
        // a1 is under the other relay's lease: skipped, and a2 stays behind it; the rest is read.
        expect(partitioned.map((r) => r.message.id)).toEqual(["b1", "n1"])
        // The row-leasing relay now finds partitions leased: it claims nothing and says why.
        const refused = yield* Effect.flip(byRow.claim({ relayId: "rows", limit: 10, leaseMillis: 60_000 }))
        expect(refused._tag).toBe("OutboxStoreError")
        expect(refused.cause).toMatchObject({ _tag: "ModeConflict", leasedPartitions: 32 })
        expect(refused.message).toContain("partitioned: true")
        // It settles what it holds; once the partitioned relay has handed its partitions back, it claims again.
        expect(yield* Effect.orDie(byRow.markPublished("rows", [first[0]!.id]))).toBe(1)
        yield* Effect.orDie(store.release!("parts"))
        const again = yield* Effect.orDie(byRow.claim({ relayId: "rows", limit: 10, leaseMillis: 60_000 }))
        expect(again.map((r) => r.message.id)).toEqual(["b1", "a2", "n1"])
      }))
  })

suite("pglite", engines.pglite())
suite("postgres", engines.postgres())

export type { Database }
