import { Database } from "@bulwark/sql"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer } from "effect"
import * as MemoryDispatchStore from "../src/DispatchStore/Memory.js"
import * as SqlDispatchStore from "../src/DispatchStore/Sql.js"
import { contract } from "./dispatchContract.js"

const postgresUrl = process.env["BULWARK_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
let counter = 0
const uniqueTable = () => `bulwark_wh_${Date.now().toString(36)}_${(counter++).toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`

const sqlFresh = Effect.gen(function*() {
  const table = uniqueTable()
  const store = yield* SqlDispatchStore.make({ table }).pipe(Effect.orDie)
  yield* Effect.addFinalizer(() => SqlDispatchStore.drop(table).pipe(Effect.orDie))
  return store
})

contract({ name: "memory", layer: Layer.empty, fresh: MemoryDispatchStore.make() })
contract<SqlClient.SqlClient | Database.Database>({ name: "pglite", layer: Database.layerPglite(), fresh: sqlFresh })
contract<SqlClient.SqlClient | Database.Database>({ name: "postgres", layer: Database.layerPostgres({ url: postgresUrl }), fresh: sqlFresh })
