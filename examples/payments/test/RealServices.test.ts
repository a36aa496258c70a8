/**
 * The same run against real services: PostgreSQL (orders, outbox, idempotency keys, dead letters) and NATS
 * JetStream (both topics and their dead-letter topics). Both are expected to be running; the test does not
 * skip. Every table and stream it creates carries a per-run prefix and is removed at the end.
 */
import { Database } from "@bulwark/sql"
import { describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer } from "effect"
import * as App from "../src/App.js"
import * as Load from "../src/Load.js"
import * as Platform from "../src/Platform.js"
import * as Summary from "../src/Summary.js"

const databaseUrl = process.env["BULWARK_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const natsServers = Platform.natsServers(process.env["NATS_URL"] ?? "127.0.0.1:4222")
const id = Platform.runId()
const tablePrefix = `payments_t${id}`
const streamPrefix = `payments-t-${id}`

const tablesLeft = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name LIKE ${`${tablePrefix}%`}`
  return Number(rows[0]?.n ?? 0)
}).pipe(Effect.provide(Database.layerPostgres({ url: databaseUrl, maxConnections: 1 })))

describe("the payments run on PostgreSQL and NATS JetStream", () => {
  it.live("passes its exactly-once checks and cleans up after itself", () =>
    Effect.gen(function*() {
      const load: Load.LoadOptions = { ...Load.defaultLoad, webhooks: 80, concurrency: 16, seed: 11, undeliverableRate: 0.03 }
      const observations = yield* App.run({
        ...App.defaults,
        load,
        tablePrefix,
        dropTables: true,
        idempotency: "sql",
        outage: { atShare: 0.3, duration: "800 millis" },
        slowEvery: 23,
        setup: "test: PostgreSQL, NATS"
      }).pipe(
        Effect.provide(Layer.merge(Database.layerPostgres({ url: databaseUrl }), Platform.natsTransport(natsServers, streamPrefix))),
        Effect.ensuring(Effect.orDie(Platform.deleteStreams(natsServers, streamPrefix)))
      )
      const summary = Summary.evaluate(observations)
      const plan = Load.plan(load)
      expect(summary.checks.filter((c) => !c.ok)).toEqual([])
      expect(summary.numbers.received).toBe(load.webhooks)
      expect(summary.numbers.ordersPaid).toBe(plan.payments)
      expect(summary.numbers.shipmentsBooked + summary.numbers.awaitingTriage).toBe(plan.payments)
      expect(observations.shipping.outageRejections).toBeGreaterThan(0)
      expect(yield* tablesLeft).toBe(0)
    }))
})
