// Issue 17: the transport fault suite over a private PostgreSQL server, restarted with `pg_ctl restart -m immediate`
// (a crash as far as clients are concerned) mid-stream.
import { Database } from "@bulwark/sql"
import * as Contract from "@bulwark/transport/Contract"
import { Layer } from "effect"
import * as PrivatePostgres from "../../sql/test/support/PrivatePostgres.js"
import * as PostgresTransport from "../src/PostgresTransport.js"

Contract.faultSuite(
  "postgres queue table",
  async () => {
    const pg = await PrivatePostgres.start()
    return { url: pg.url, restart: () => pg.restart({ downMillis: 500 }), destroy: pg.destroy }
  },
  (pg) =>
    PostgresTransport.layer({ table: "fault_queue", visibilityTimeout: "2 seconds", pollInterval: "200 millis", batchSize: 10 }).pipe(
      Layer.provide(Database.layerPostgres({ url: pg.url, maxConnections: 6 }))
    )
)
