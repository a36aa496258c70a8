import { AuditLog as Port } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import { Command } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { afterAll, describe, expect, it, vi } from "vitest"
import { ConfigProvider, Effect, Layer } from "effect"
import * as SqlAuditLog from "../src/AuditLog/Sql.js"
import * as Cli from "../src/Cli.js"

const url = process.env["BULWARK_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const table = `bulwark_audit_cli_${Date.now().toString(36)}`
const database = Database.layerPostgres({ url })

afterAll(() => Effect.runPromise(SqlAuditLog.drop(table).pipe(Effect.provide(database), Effect.orDie)))

describe("bulwark history", () => {
  it("show prints an event's story; replay republishes kept messages once, rate-limited; bad input is exit 2", async () => {
    const now = Date.now()
    const message = (id: string) => ({ key: id, payload: new TextEncoder().encode(id), headers: { "causation-id": "x" } })
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const log = yield* SqlAuditLog.make({ table, keepMessages: true })
      yield* log.write([
        new Port.Entry({ eventId: "pay-1", stage: "received", at: now - 3000, component: "webhook", topic: "payments", outcome: "accepted", detail: { verification: "valid", status: 200 } }),
        new Port.Entry({ eventId: "pay-1", stage: "published", at: now - 2990, component: "transport", topic: "payments", message: message("pay-1") }),
        new Port.Entry({ eventId: "pay-1", stage: "processed", at: now - 2900, component: "pipeline", topic: "payments", outcome: "acked", durationMs: 12 }),
        new Port.Entry({ eventId: "ship-1", stage: "published", at: now - 2800, component: "transport", topic: "order-paid", causationId: "pay-1", message: message("ship-1") }),
        new Port.Entry({ eventId: "ship-1", stage: "dead-lettered", at: now - 2700, component: "pipeline", topic: "order-paid", causationId: "pay-1", category: "timeout" }),
        new Port.Entry({ eventId: "pay-2", stage: "published", at: now - 2000, component: "transport", topic: "payments", message: message("pay-2") }),
        new Port.Entry({ eventId: "pay-2", stage: "published", at: now - 1900, component: "transport", topic: "payments", message: message("pay-2") })
      ])
      yield* log.flush
    })).pipe(Effect.provide(database)))

    const published: Array<string> = []
    const publisher = Layer.succeed(Transport.Publisher, {
      publish: (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) =>
        Effect.sync(() => void published.push(...messages.map((m) => `${topic}:${m.id}`)))
    })
    const lines: Array<string> = []
    const log = vi.spyOn(console, "log").mockImplementation((...data: Array<unknown>) => void lines.push(data.join(" ")))
    vi.spyOn(console, "error").mockImplementation(() => undefined)
    const run = (args: ReadonlyArray<string>) =>
      Command.run(Cli.make({ publisher }), { name: "bulwark", version: "test" })(["node", "bulwark", ...args]).pipe(
        Effect.provide(NodeContext.layer),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["BULWARK_DATABASE_URL", url], ["BULWARK_AUDIT_TABLE", table]]))),
        Effect.either,
        Effect.runPromise
      )
    try {
      expect((await run(["show", "pay-1"]))._tag).toBe("Right")
      expect(lines[0]).toBe("event pay-1: 5 entries")
      expect(lines.slice(1).map((l) => l.split(/\s+/).slice(2, 4).join(" "))).toEqual([
        "received webhook",
        "published transport",
        "processed pipeline",
        "published transport",
        "dead-lettered pipeline"
      ])
      expect(lines[5]).toContain("[caused: ship-1]")
      expect(lines[5]).toContain("category=timeout")

      const missing = await run(["show", "nope"])
      expect(missing._tag === "Left" && (missing.left as { code?: number }).code).toBe(1)

      lines.length = 0
      expect((await run(["replay", "--since", "1h", "--to", "rebuilt", "--from-topic", "payments", "--rate", "200"]))._tag).toBe("Right")
      expect(published).toEqual(["rebuilt:pay-1", "rebuilt:pay-2"])
      expect(lines.at(-1)).toContain("replayed 2 events to rebuilt; skipped 1 repeated publishes")

      const bad = await run(["replay", "--since", "yesterday", "--to", "rebuilt"])
      expect(bad._tag === "Left" && (bad.left as { code?: number }).code).toBe(2)
    } finally {
      log.mockRestore()
      vi.restoreAllMocks()
    }
  }, 120_000)
})
