import * as SqlClient from "@effect/sql/SqlClient"
import { expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as Outbox from "../src/Outbox.js"
import * as OutboxStore from "../src/OutboxStore.js"
import * as Relay from "../src/Relay.js"
import { sinkPublisher } from "./fixtures/sink.js"
import { dropOutbox, engines, postgresUrl, uniqueTable } from "./helpers.js"

const child = fileURLToPath(new URL("./fixtures/relay-child.ts", import.meta.url))
const encoder = new TextEncoder()

layer(engines.postgres(), { excludeTestServices: true, timeout: "60 seconds" })("relay in a killed process", (it) => {
  it.scoped("a relay process killed (SIGKILL) mid-run loses no row; the only duplicates are its last batch", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const table = uniqueTable("killed")
      const sink = `${table}_sink`
      const outbox = yield* Outbox.make({ table })
      yield* Effect.addFinalizer(() => Effect.zipRight(dropOutbox(table), sql`DROP TABLE IF EXISTS ${sql(sink)}`.pipe(Effect.orDie)))
      yield* sql`CREATE TABLE ${sql(sink)} (seq bigserial, message_id text NOT NULL, topic text NOT NULL)`
      const ids = Array.from({ length: 300 }, (_, i) => `m-${i}`)
      yield* sql.withTransaction(outbox.appendMessages("t", ids.map((id, i) => ({ id, key: `k-${i % 50}`, payload: encoder.encode(id), headers: {} }))))

      const proc = spawn(process.execPath, ["--import", "tsx", child, postgresUrl, table, sink], { stdio: ["ignore", "pipe", "pipe"] })
      let stderr = ""
      proc.stderr.on("data", (chunk) => (stderr += String(chunk)))
      const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)))
      yield* Effect.addFinalizer(() => Effect.sync(() => proc.kill("SIGKILL")))

      // Wait until the child has published some batches, then kill it without warning.
      const sinkCount = Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(sink)}`, (r) => r[0]!.n)
      let published = 0
      const deadline = Date.now() + 40_000
      while ((published = yield* sinkCount) < 60 && Date.now() < deadline && proc.exitCode === null) {
        yield* Effect.sleep("20 millis")
      }
      expect(stderr).toBe("")
      expect(published).toBeGreaterThanOrEqual(60)
      proc.kill("SIGKILL")
      yield* Effect.promise(() => exited)
      expect(yield* outbox.backlog).toBeGreaterThan(0)

      // Restart: a new relay takes over once the dead one's lease expires.
      yield* Relay.run({ batchSize: 25, pollInterval: "100 millis" }).pipe(
        Effect.provideService(OutboxStore.OutboxStore, outbox),
        Effect.provide(sinkPublisher(sink)),
        Effect.forkScoped
      )
      yield* outbox.drained
      const rows = yield* sql<{ message_id: string; n: number }>`SELECT message_id, count(*)::int AS n FROM ${sql(sink)} GROUP BY message_id`
      expect(rows.map((r) => r.message_id).sort()).toEqual([...ids].sort())
      const duplicated = rows.filter((r) => r.n > 1)
      // At most the batch that was published but not yet marked when the process died (batch size 10).
      expect(duplicated.length).toBeLessThanOrEqual(10)
      expect(duplicated.every((r) => r.n === 2)).toBe(true)
    }))
})
