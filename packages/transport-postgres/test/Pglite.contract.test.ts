import { Database } from "@bulwark/sql"
import * as Contract from "@bulwark/transport/Contract"
import { Layer } from "effect"
import * as PostgresTransport from "../src/PostgresTransport.js"

// The embedded engine is one connection: the whole suite shares it, each test on its own topics.
Contract.suite(
  "postgres queue table on pglite",
  PostgresTransport.layer({ table: "bulwark_queue_contract", visibilityTimeout: "1 second", pollInterval: "100 millis" }).pipe(
    Layer.provide(Database.layerPglite())
  ),
  { propertyRuns: 4 }
)
