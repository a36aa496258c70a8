/**
 * The stock binary replays dead letters through the transport `BULWARK_TRANSPORT` names. On the embedded
 * default (`postgres` over PGlite) the store and the queue table share one database.
 */
import { Failure } from "@bulwark/core"
import { SqlDeadLetterStore } from "@bulwark/dead-letter"
import { Database } from "@bulwark/sql"
import * as PostgresTransport from "@bulwark/transport-postgres/PostgresTransport"
import * as SqlClient from "@effect/sql/SqlClient"
import { Chunk, ConfigProvider, Effect, Layer, Stream } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import * as Transports from "../src/Transports.js"
import { runCli } from "./support/bin.js"

const root = mkdtempSync(join(tmpdir(), "bulwark-cli-replay-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))

// `timeoutMs` kills a process that does not exit by itself (then `code` is null and `killed` true).
const cli = (args: ReadonlyArray<string>, env: Record<string, string>, timeoutMs = 200_000) => runCli(args, { env, timeoutMs })

const postgresUrl = process.env["BULWARK_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"

const cloudEvent = (id: string) =>
  new TextEncoder().encode(JSON.stringify({
    specversion: "1.0",
    id,
    type: "order.paid",
    source: "/billing",
    subject: `order-${id}`,
    datacontenttype: "application/json",
    data: { orderId: id }
  }))

const entry = (id: string, category: Failure.Category) => ({
  message: { id, topic: "orders", key: `order-${id}`, payload: cloudEvent(id), headers: {} },
  category,
  error: new Failure.FailureRecord({ tag: "HttpError", message: "503 from billing", classification: "transient", category, status: 503 }),
  attempts: 10
})

describe("bulwark dlq replay (stock binary)", () => {
  it("replays into the Postgres queue table of the embedded database, once per entry; refuses without BULWARK_TRANSPORT", async () => {
    const dataDir = join(root, "pglite")
    const database = Database.layerPglite({ dataDir })
    await Effect.runPromise(
      Effect.gen(function*() {
        const store = yield* SqlDeadLetterStore.make()
        yield* store.add(entry("dep-1", "dependency"))
        yield* store.add(entry("dep-2", "dependency"))
        yield* store.add(entry("auth-1", "auth"))
      }).pipe(Effect.provide(database))
    )

    const refused = await cli(["dlq", "replay", "--category", "dependency"], { BULWARK_DATA_DIR: dataDir })
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain("set BULWARK_TRANSPORT")
    expect(refused.stderr).not.toContain("    at ")
    const unknown = await Effect.runPromise(
      Layer.build(Transports.publisherFromEnv).pipe(
        Effect.scoped,
        Effect.provide(database),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["BULWARK_TRANSPORT", "carrier-pigeon"]]))),
        Effect.flip
      )
    )
    expect(unknown).toMatchObject({ _tag: "CliExit", code: 2 })
    expect(String((unknown as { message: string }).message)).toContain("carrier-pigeon")

    const env = { BULWARK_DATA_DIR: dataDir, BULWARK_TRANSPORT: "postgres" }
    const first = await cli(["dlq", "replay", "--category", "dependency", "--rate", "100"], env)
    // the store in use is stated first on stderr, and nothing else is
    expect(first.stderr).toBe(`store: PGlite at ${dataDir} (table bulwark_dead_letters)\n`)
    expect(first.code).toBe(0)
    expect(first.stdout).toContain("replayed 2, skipped 0")
    const again = await cli(["dlq", "replay", "--category", "dependency"], env)
    expect(again.code).toBe(0)
    expect(again.stdout).toContain("replayed 0")

    // The replayed messages wait in the queue table for the origin topic's consumers, bytes unchanged.
    const delivered = await Effect.runPromise(
      Effect.gen(function*() {
        const transport = yield* PostgresTransport.make()
        const deliveries = yield* transport.subscribe("orders").pipe(
          Stream.take(2),
          Stream.tap((d) => d.ack),
          Stream.runCollect
        )
        const store = yield* SqlDeadLetterStore.make()
        const pending = yield* store.list({ replay: "pending" })
        return { deliveries: Chunk.toReadonlyArray(deliveries), pending: pending.map((e) => e.messageId) }
      }).pipe(Effect.scoped, Effect.provide(database))
    )
    // Each replay travels under its own transport id (so a broker's duplicate window cannot drop it).
    expect(delivered.deliveries.map((d) => d.message.id).sort()).toEqual(["dep-1:replay:1", "dep-2:replay:1"])
    expect(new TextDecoder().decode(delivered.deliveries[0]!.message.payload)).toContain('"specversion":"1.0"')
    expect(delivered.pending).toEqual(["auth-1"])
  }, 240_000)

  it("BULWARK_TRANSPORT=postgres on real Postgres exits when there is nothing to replay (no LISTEN connection left open)", async () => {
    const suffix = `${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`
    const dlqTable = `bulwark_dlq_exit_${suffix}`
    const queueTable = `bulwark_q_exit_${suffix}`
    try {
      const env = { BULWARK_DATABASE_URL: postgresUrl, BULWARK_TRANSPORT: "postgres", BULWARK_DLQ_TABLE: dlqTable, BULWARK_QUEUE_TABLE: queueTable }
      // Start-up alone takes seconds on a busy machine; the hang was forever.
      const replayed = await cli(["dlq", "replay"], env, 120_000)
      expect(replayed.killed).toBe(false)
      expect(replayed.code).toBe(0)
      expect(replayed.stdout).toContain("replayed 0, skipped 0")
    } finally {
      await Effect.runPromise(
        Effect.gen(function*() {
          yield* PostgresTransport.drop(queueTable)
          const sql = yield* SqlClient.SqlClient
          yield* sql`DROP TABLE IF EXISTS ${sql(dlqTable)}`
          yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`dead-letter:${dlqTable}`}`
        }).pipe(Effect.provide(Database.layerPostgres({ url: postgresUrl })))
      )
    }
  }, 240_000)
})
