import type { Database } from "@bulwark/sql"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"
import * as Outbox from "../src/Outbox.js"
import { contract, type Harness } from "./contract.js"
import { type DatabaseLayer, dropOutbox, engines, uniqueTable } from "./helpers.js"

const sqlHarness = (
  name: string,
  layer: DatabaseLayer,
  options: Outbox.Options = {}
): Harness<SqlClient.SqlClient | Database.Database> => ({
  name,
  layer,
  virtualTime: false,
  partitioned: options.partitioned === true,
  fresh: (label) =>
    Effect.gen(function*() {
      const table = uniqueTable(label)
      const store = yield* Outbox.make({ ...options, table }).pipe(Effect.orDie)
      yield* Effect.addFinalizer(() => dropOutbox(table))
      const sql = yield* SqlClient.SqlClient
      return { store, transaction: sql.withTransaction }
    })
})

contract(sqlHarness("pglite", engines.pglite()))
contract(sqlHarness("postgres", engines.postgres()))
contract(sqlHarness("pglite, partitioned", engines.pglite(), { partitioned: true }))
contract(sqlHarness("postgres, partitioned", engines.postgres(), { partitioned: true }))
