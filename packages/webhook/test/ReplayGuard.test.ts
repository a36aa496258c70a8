/**
 * The replay guard over every backing: the memory guard, and the idempotency adapter over the memory, SQL
 * (PostgreSQL) and Redis idempotency stores. The durable ones are shared: a second ingress instance, or the
 * same one after a restart, answers an already-accepted id as a duplicate.
 */
import { Database } from "@bulwark/sql"
import * as IdempotencyStore from "@bulwark/idempotency/IdempotencyStore"
import * as MemoryStore from "@bulwark/idempotency/IdempotencyStore/Memory"
import * as RedisStore from "@bulwark/idempotency/IdempotencyStore/Redis"
import * as SqlStore from "@bulwark/idempotency/IdempotencyStore/Sql"
import { Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Schema, TestClock } from "effect"
import { Redis } from "ioredis"
import * as Ingress from "../src/Ingress.js"
import * as ReplayGuard from "../src/ReplayGuard.js"
import * as IdempotencyGuard from "../src/ReplayGuard/Idempotency.js"
import * as Signing from "../src/Signing.js"
import * as Verifier from "../src/Verifier.js"

const postgresUrl = process.env.BULWARK_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const redisUrl = process.env.BULWARK_TEST_REDIS_URL ?? "redis://127.0.0.1:6379"
const run = `${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`
const table = `bulwark_replay_test_${run}`
const redisPrefix = `bulwark:replay-test:${run}:`

/** A fresh backing per call: each call is one ingress instance (its own connection), sharing the store. */
const backings: ReadonlyArray<{ readonly name: string; readonly durable: boolean; readonly layer: () => Layer.Layer<ReplayGuard.ReplayGuard, unknown> }> = [
  { name: "memory guard", durable: false, layer: () => ReplayGuard.layerMemory() },
  { name: "idempotency memory store", durable: false, layer: () => IdempotencyGuard.layer().pipe(Layer.provide(MemoryStore.layer())) },
  {
    name: "idempotency SQL store (PostgreSQL)",
    durable: true,
    layer: () =>
      IdempotencyGuard.layer().pipe(
        Layer.provide(SqlStore.layer({ table })),
        Layer.provide(Database.layerPostgres({ url: postgresUrl }))
      )
  },
  {
    name: "idempotency Redis store",
    durable: true,
    layer: () => IdempotencyGuard.layer().pipe(Layer.provide(RedisStore.layer({ url: redisUrl, prefix: redisPrefix })))
  }
]

const unique = (name: string) => `${name}-${Date.now()}-${Math.random().toString(36).slice(2)}`

const Invoice = Schema.Struct({ type: Schema.String })
const secret = Signing.generateSecret()
const body = new TextEncoder().encode(JSON.stringify({ type: "invoice.paid" }))
const options = {
  verifier: Verifier.standard([secret], { source: "billing" }),
  schema: Invoice,
  topic: "billing.events",
  type: "com.example.invoice",
  subject: () => "cus_1"
}

/** A publisher recording the ids it accepted. */
const recording = () => {
  const published: Array<string> = []
  const layer = Layer.succeed(Transport.Publisher, {
    publish: (_topic, messages) => Effect.sync(() => messages.forEach((m) => published.push(m.id)))
  })
  return { published, layer }
}

/** One ingress instance over `guard`: processes a signed request for `id`. */
const receive = (guard: Layer.Layer<ReplayGuard.ReplayGuard, unknown>, publisher: Layer.Layer<Transport.Publisher>, id: string) =>
  Effect.gen(function*() {
    const headers = yield* Signing.standard([secret], { id, body })
    return yield* Effect.exit(Ingress.process(options)({ headers: { ...headers }, body }))
  }).pipe(Effect.provide(Layer.merge(guard, publisher)))

for (const backing of backings) {
  describe(`ReplayGuard over ${backing.name}`, () => {
    it.live("claim, in-flight, commit, seen; a released claim is claimable again", () =>
      Effect.gen(function*() {
        const guard = yield* ReplayGuard.ReplayGuard
        const [a, b] = [unique("a"), unique("b")]
        expect(yield* guard.claim(a, "30 seconds", "1 hour")).toBe("claimed")
        expect(yield* guard.claim(a, "30 seconds", "1 hour")).toBe("in-flight")
        yield* guard.commit(a, "1 hour")
        expect(yield* guard.claim(a, "30 seconds", "1 hour")).toBe("seen")
        expect(yield* guard.claim(b, "30 seconds", "1 hour")).toBe("claimed")
        yield* guard.release(b)
        expect(yield* guard.claim(b, "30 seconds", "1 hour")).toBe("claimed")
        expect(yield* ReplayGuard.firstSeen(unique("c"), "1 hour")).toBe(true)
      }).pipe(Effect.provide(backing.layer())), 30_000)

    if (backing.durable) {
      it.live("a second ingress instance, and the first after a restart, answer an accepted id as a duplicate", () =>
        Effect.gen(function*() {
          const publisher = recording()
          const id = unique("msg")
          // Each `receive` builds its own guard and store connection and closes them afterwards: a
          // separate instance, or a restart of the same one.
          const first = yield* receive(backing.layer(), publisher.layer, id)
          expect(first).toEqual(Exit.succeed({ id, duplicate: false }))
          const second = yield* receive(backing.layer(), publisher.layer, id)
          expect(second).toEqual(Exit.succeed({ id, duplicate: true }))
          const afterRestart = yield* receive(backing.layer(), publisher.layer, id)
          expect(afterRestart).toEqual(Exit.succeed({ id, duplicate: true }))
          expect(publisher.published).toEqual([id])
          // Two instances at once over one shared guard store: one accepts, the other is a duplicate or
          // told the id is in flight (409), never a second persist.
          const other = unique("msg")
          const both = yield* Effect.all([
            receive(backing.layer(), publisher.layer, other),
            receive(backing.layer(), publisher.layer, other)
          ], { concurrency: 2 })
          expect(publisher.published.filter((p) => p === other)).toEqual([other])
          expect(both.filter((e) => Exit.isSuccess(e) && !e.value.duplicate)).toHaveLength(1)
        }), 30_000)
    }
  })
}

/** An idempotency store that is down. */
const downStore = Layer.succeed(IdempotencyStore.IdempotencyStore, {
  claim: (key) => Effect.fail(new IdempotencyStore.IdempotencyStoreError({ operation: "claim", key, cause: "connection refused" })),
  complete: (key) => Effect.fail(new IdempotencyStore.IdempotencyStoreError({ operation: "complete", key, cause: "connection refused" })),
  release: (key) => Effect.fail(new IdempotencyStore.IdempotencyStoreError({ operation: "release", key, cause: "connection refused" })),
  purgeExpired: Effect.succeed(0)
})

describe("ReplayGuard over an unreachable store", () => {
  it.live("the ingress answers 503 with Retry-After and persists nothing: a replay cannot be ruled out", () =>
    Effect.gen(function*() {
      const publisher = recording()
      const exit = yield* receive(IdempotencyGuard.layer().pipe(Layer.provide(downStore)), publisher.layer, unique("msg"))
      const answer = Ingress.answer(exit)
      expect(answer.status).toBe(503)
      expect(answer.headers["retry-after"]).toBeDefined()
      expect(answer.body).toMatchObject({ error: "ReplayCheckFailed" })
      expect(publisher.published).toEqual([])
    }))

  it.live("Verifier.withReplayGuard refuses as unavailable, not as a bad signature", () =>
    Effect.gen(function*() {
      const verifier = yield* Verifier.withReplayGuard(Verifier.standard([secret]))
      const headers = yield* Signing.standard([secret], { id: unique("msg"), body })
      const error = yield* Effect.flip(verifier.verify({ headers: { ...headers }, body }))
      expect(error._tag).toBe("ReplayCheckFailed")
    }).pipe(Effect.provide(IdempotencyGuard.layer().pipe(Layer.provide(downStore)))))
})

afterAll(async () => {
  await Effect.runPromise(
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`DROP TABLE IF EXISTS ${sql(table)}`
      yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`idempotency:${table}`}`
    }).pipe(Effect.provide(Database.layerPostgres({ url: postgresUrl })))
  )
  const client = new Redis(redisUrl)
  const keys = await client.keys(`${redisPrefix}*`)
  if (keys.length > 0) await client.del(...keys)
  await client.quit()
}, 30_000)

describe("ReplayGuard memory driver bounds", () => {
  it.effect("beyond maxEntries the oldest ids are forgotten first; expired ones are swept; a release frees only a claim", () =>
    Effect.gen(function*() {
      const guard = yield* ReplayGuard.makeMemory({ maxEntries: 3 })
      for (const key of ["a", "b", "c", "d", "e"]) {
        expect(yield* guard.claim(key, "30 seconds")).toBe("claimed")
        yield* guard.commit(key, "1 hour")
      }
      // The bound is kept by the sweep at each claim: a and b are evicted, oldest first; c, d, e stay.
      expect(yield* guard.claim("e", "30 seconds")).toBe("seen")
      expect(yield* guard.claim("d", "30 seconds")).toBe("seen")
      expect(yield* guard.claim("a", "30 seconds")).toBe("claimed")
      yield* guard.release("a")
      yield* guard.release("d") // committed: a release leaves it remembered
      expect(yield* guard.claim("d", "30 seconds")).toBe("seen")
      yield* TestClock.adjust("2 hours")
      expect(yield* guard.claim("d", "30 seconds")).toBe("claimed")
      expect(yield* guard.claim("d", "30 seconds")).toBe("in-flight")
    }))
})
