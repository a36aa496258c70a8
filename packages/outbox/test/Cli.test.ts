/** `bulwark outbox dead | requeue` against an embedded database, through the real binary. */
import { Failure } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import * as Sql from "../src/OutboxStore/Sql.js"
import { runCli } from "../../cli/test/support/bin.js"

const root = mkdtempSync(join(tmpdir(), "bulwark-outbox-cli-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))

const cli = (args: ReadonlyArray<string>, env: Record<string, string>) => runCli(["outbox", ...args], { env })

const encoder = new TextEncoder()
const error = new Failure.FailureRecord({ tag: "PublishError", message: "key revoked", classification: "permanent", category: "auth" })

/** Appends rows and marks them dead, as a relay whose publishes were refused for good would. */
const seedDead = (dataDir: string) =>
  Effect.runPromise(
    Effect.gen(function*() {
      const store = yield* Sql.make()
      const sql = yield* SqlClient.SqlClient
      const raw = (id: string) => ({ id, key: "", payload: encoder.encode(id), headers: {} })
      yield* sql.withTransaction(store.appendMessages("orders", [raw("o-1"), raw("o-2")]))
      yield* sql.withTransaction(store.appendMessages("invoices", [raw("i-1")]))
      const claimed = yield* store.claim({ relayId: "seed", limit: 10, leaseMillis: 60_000 })
      for (const row of claimed) yield* store.markDead("seed", row.id, { attempts: 3, error, deadLetterPublished: true })
      // One row stays pending: requeue must leave it alone.
      yield* sql.withTransaction(store.appendMessages("orders", [raw("o-3")]))
      return claimed.map((row) => ({ id: row.id, messageId: row.message.id }))
    }).pipe(Effect.provide(Database.layerPglite({ dataDir })))
  )

const stateOf = (dataDir: string) =>
  Effect.runPromise(
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const rows = yield* sql<{ message_id: string; state: string; attempts: number }>`
        SELECT message_id, state, attempts FROM ${sql(Sql.defaultTable)} ORDER BY id`
      return rows.map((r) => `${r.message_id}:${r.state}:${r.attempts}`)
    }).pipe(Effect.provide(Database.layerPglite({ dataDir })))
  )

describe("bulwark outbox", () => {
  it("lists dead rows, requeues one by id, a topic, then all; refuses bad usage and a missing store (exit 2)", async () => {
    const dataDir = join(root, "pglite")
    const env = { BULWARK_DATA_DIR: dataDir }
    const seeded = await seedDead(dataDir)
    const [listed, none, both, badId, missing] = await Promise.all([
      cli(["dead", "--json"], env),
      cli(["requeue"], env),
      cli(["requeue", "--all", "--topic", "orders"], env),
      cli(["requeue", "--id", "0"], env),
      cli(["dead"], { BULWARK_DATA_DIR: join(root, "nowhere") })
    ])
    expect(listed.stderr).toBe(`store: PGlite at ${dataDir} (table ${Sql.defaultTable})\n`)
    expect(listed.code).toBe(0)
    const rows = JSON.parse(listed.stdout) as ReadonlyArray<Record<string, any>>
    expect(rows.map((r) => [r.topic, r.messageId, r.attempts, r.deadLetterPublished])).toEqual([
      ["orders", "o-1", 3, true],
      ["orders", "o-2", 3, true],
      ["invoices", "i-1", 3, true]
    ])
    expect(rows[0]!.error).toMatchObject({ tag: "PublishError", message: "key revoked", category: "auth" })
    for (const refused of [none, both, badId]) {
      expect(refused.code).toBe(2)
      expect(refused.stderr).toContain("bulwark outbox:")
    }
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain(`no outbox at ${join(root, "nowhere")}`)

    const o1 = seeded.find((r) => r.messageId === "o-1")!
    const one = await cli(["requeue", "--id", String(o1.id)], env)
    expect(one.code).toBe(0)
    expect(one.stdout).toContain("requeued 1 dead row;")
    expect(await stateOf(dataDir)).toEqual(["o-1:pending:0", "o-2:dead:3", "i-1:dead:3", "o-3:pending:0"])
    const topic = await cli(["requeue", "--topic", "invoices"], env)
    expect(topic.stdout).toContain("requeued 1 dead row;")
    const all = await cli(["requeue", "--all"], env)
    expect(all.stdout).toContain("requeued 1 dead row;")
    expect(await stateOf(dataDir)).toEqual(["o-1:pending:0", "o-2:pending:0", "i-1:pending:0", "o-3:pending:0"])
    const empty = await cli(["dead"], env)
    expect(empty.stdout).toContain("no dead outbox rows")
  }, 300_000)
})
