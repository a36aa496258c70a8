import { Database } from "@bulwark/sql"
import * as Contract from "@bulwark/transport/Contract"
import { Layer } from "effect"
import * as PostgresTransport from "../src/PostgresTransport.js"
import { dropOnClose, postgresUrl, uniqueTable } from "./helpers.js"

const table = uniqueTable("contract")

Contract.suite(
  "postgres queue table on postgres",
  Layer.merge(
    PostgresTransport.layer({ table, visibilityTimeout: "1 second", pollInterval: "100 millis" }),
    dropOnClose(table)
  ).pipe(Layer.provideMerge(Database.layerPostgres({ url: postgresUrl }))),
  { propertyRuns: 4 }
)
