import { Database } from "@bulwark/sql"
import { describe, it } from "@effect/vitest"
import { Effect, Layer, ManagedRuntime } from "effect"
import { afterAll } from "vitest"
import * as Sql from "../src/RateLimiterStore/Sql.js"
import { suite } from "./contract.js"
import { fourProcesses } from "./shared.js"

const postgresUrl = process.env.BULWARK_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const table = `bulwark_rl_test_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`
const shared = `${table}_mp`

// One embedded database for the whole suite: opening PGlite takes seconds.
const pglite = ManagedRuntime.make(Database.layerPglite())
suite("pglite", Sql.layer({ table }).pipe(Layer.provide(Layer.effectContext(Effect.map(Effect.promise(() => pglite.runtime()), (r) => r.context)))))
suite("postgres", Sql.layer({ table }).pipe(Layer.provide(Database.layerPostgres({ url: postgresUrl }))))

describe("SQL store", () => {
  it("four processes share one limit: never above it in any window, within 5 % of it", async () => {
    await fourProcesses({ driver: "postgres", url: postgresUrl, namespace: shared, name: `shared-${Date.now()}`,
      // A reservation is one statement under one row lock: a lower rate than Redis, so a server on a loaded
      // machine still keeps up with it.
      limit: 4,
      windowMillis: 400,
      durationMillis: 4_000,
      fibers: 10
    })
  }, 60_000)
})

afterAll(() =>
  Effect.runPromise(
    Effect.gen(function*() {
      yield* Sql.drop(table)
      yield* Sql.drop(shared)
    }).pipe(Effect.provide(Database.layerPostgres({ url: postgresUrl })), Effect.asVoid)
  ).then(() => pglite.dispose()), 30_000)
