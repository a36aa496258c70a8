import type { Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { expect, layer } from "@effect/vitest"
import { Deferred, Effect, Fiber, TestServices } from "effect"
import * as Outbox from "../src/Outbox.js"
import { dropOutbox, engines, uniqueTable } from "./helpers.js"

const encoder = new TextEncoder()
const raw = (id: string, key: string): Transport.OutgoingMessage => ({ id, key, payload: encoder.encode(id), headers: {} })

// Two appending transactions of one key overlap: the one that took the lower id commits last. Only a server
// with several connections can do that (PGlite runs one transaction at a time), so this runs on PostgreSQL.
layer(engines.postgres())("outbox on postgres: per-key order under concurrent appenders", (it) => {
  it.scoped("a key's newer row waits for an older appending transaction still running; transactions that do not append delay nothing", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const table = uniqueTable("commitorder")
      const store = yield* Outbox.make({ table })
      yield* Effect.addFinalizer(() => dropOutbox(table))
      const other = `${table}_other`
      yield* sql`CREATE TABLE ${sql(other)} (n int)`
      yield* Effect.addFinalizer(() => Effect.orDie(sql`DROP TABLE IF EXISTS ${sql(other)}`))
      const append = (messages: ReadonlyArray<Transport.OutgoingMessage>) =>
        Outbox.appendMessages("t", messages).pipe(Effect.provideService(Outbox.Outbox, Outbox.fromStore(store)))
      const claimed = (relayId: string) => store.claim({ relayId, limit: 10, leaseMillis: 30_000 })
      const claimIds = (relayId: string) => Effect.map(claimed(relayId), (rows) => rows.map((r) => r.message.id))

      // A transaction that writes elsewhere and stays open: older than every row below, never an appender.
      const unrelatedOpen = yield* Deferred.make<void>()
      const unrelatedEnd = yield* Deferred.make<void>()
      const unrelated = yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO ${sql(other)} (n) VALUES (1)`
        yield* Deferred.succeed(unrelatedOpen, undefined)
        yield* Deferred.await(unrelatedEnd)
      })).pipe(Effect.fork)
      // On a failed expectation the open transactions end before the tables are dropped (finalizers run last first).
      yield* Effect.addFinalizer(() => Deferred.succeed(unrelatedEnd, undefined))
      yield* Deferred.await(unrelatedOpen)

      // A row appended while it is open is claimed: a transaction that never writes to the outbox delays nothing.
      yield* sql.withTransaction(append([raw("x-0", "X")]))
      const first = yield* claimed("r0")
      expect(first.map((r) => r.message.id)).toEqual(["x-0"])
      expect(yield* store.markPublished("r0", first.map((r) => r.id))).toBe(1)

      // T1 appends k-1 (the lower id) and stays open; T2 appends k-2 and x-1 and commits.
      const t1Appended = yield* Deferred.make<void>()
      const t1End = yield* Deferred.make<void>()
      const t1 = yield* sql.withTransaction(Effect.gen(function*() {
        yield* append([raw("k-1", "K")])
        yield* Deferred.succeed(t1Appended, undefined)
        yield* Deferred.await(t1End)
      })).pipe(Effect.fork)
      yield* Effect.addFinalizer(() => Deferred.succeed(t1End, undefined))
      yield* Deferred.await(t1Appended)
      yield* sql.withTransaction(append([raw("k-2", "K"), raw("x-1", "X")]))

      // k-2 is visible and the head of K among committed rows, but T1 may still commit k-1 before it. Which
      // keys T1 holds is unknown until it commits, so every keyed row appended after T1 began waits for it.
      expect(yield* claimIds("r1")).toEqual([])

      yield* Deferred.succeed(t1End, undefined)
      yield* Fiber.join(t1)
      // Now k-1 is the head of K; k-2 waits behind it, still.
      const heads = yield* claimed("r2")
      expect(heads.map((r) => r.message.id)).toEqual(["k-1", "x-1"])
      expect(yield* claimIds("r3")).toEqual([])
      expect(yield* store.markPublished("r2", heads.map((r) => r.id))).toBe(2)
      expect(yield* claimIds("r3")).toEqual(["k-2"])

      yield* Deferred.succeed(unrelatedEnd, undefined)
      yield* Fiber.join(unrelated)
    }))

  it.scoped("a row behind an appending transaction left open goes after commitOrderWindow at the latest", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const table = uniqueTable("commitwindow")
      const store = yield* Outbox.make({ table, commitOrderWindow: "300 millis" })
      yield* Effect.addFinalizer(() => dropOutbox(table))
      const append = (messages: ReadonlyArray<Transport.OutgoingMessage>) =>
        Outbox.appendMessages("t", messages).pipe(Effect.provideService(Outbox.Outbox, Outbox.fromStore(store)))
      const opened = yield* Deferred.make<void>()
      const end = yield* Deferred.make<void>()
      const open = yield* sql.withTransaction(Effect.gen(function*() {
        yield* append([raw("k-1", "K")])
        yield* Deferred.succeed(opened, undefined)
        yield* Deferred.await(end)
      })).pipe(Effect.fork)
      yield* Effect.addFinalizer(() => Deferred.succeed(end, undefined))
      yield* Deferred.await(opened)
      yield* sql.withTransaction(append([raw("k-2", "K")]))
      const claim = Effect.map(store.claim({ relayId: "r", limit: 10, leaseMillis: 30_000 }), (rows) => rows.map((r) => r.message.id))
      expect(yield* claim).toEqual([])
      yield* TestServices.provideLive(Effect.sleep("400 millis"))
      expect(yield* claim).toEqual(["k-2"])
      yield* Deferred.succeed(end, undefined)
      yield* Fiber.join(open)
    }))
})
