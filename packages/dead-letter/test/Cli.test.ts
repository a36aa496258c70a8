import { Failure } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { NodeContext } from "@effect/platform-node"
import { Command } from "@effect/cli"
import { ConfigProvider, Effect, Layer, TestClock, TestContext } from "effect"
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import * as Cli from "../src/Cli.js"
import * as Sql from "../src/DeadLetterStore/Sql.js"
import { newEntry } from "./contract.js"
import { runCli } from "../../cli/test/support/bin.js"

const postgresUrl = process.env.BULWARK_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const root = mkdtempSync(join(tmpdir(), "bulwark-dlq-cli-"))
const pgTable = `bulwark_dlq_cli_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

const cli = (args: ReadonlyArray<string>, env: Record<string, string>, cwd?: string): Promise<Run> =>
  runCli(["dlq", ...args], { env, ...(cwd === undefined ? {} : { cwd }) })

// Seeds entries: one failed two days ago (the TestClock is set back), the rest now.
const seed = (layer: Layer.Layer<SqlClient.SqlClient, unknown>, table: string, topic: string) =>
  Effect.runPromise(
    Effect.gen(function*() {
      const store = yield* Sql.make({ table })
      const now = Date.now()
      yield* TestClock.setTime(now - 2 * 86_400_000)
      const old = yield* store.add(newEntry(topic, "old-1", "schema", "order.created"))
      yield* TestClock.setTime(now)
      const auth = yield* store.add(newEntry(topic, "auth-1", "auth", "order.paid"))
      const dep1 = yield* store.add(newEntry(topic, "dep-1", "dependency", "order.paid"))
      const dep2 = yield* store.add(newEntry(topic, "dep-2", "dependency", "order.shipped"))
      return { old, auth, dep1, dep2 }
    }).pipe(Effect.provide(Layer.merge(layer, TestContext.TestContext)))
  )

afterAll(async () => {
  rmSync(root, { recursive: true, force: true })
  await Effect.runPromise(
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`DROP TABLE IF EXISTS ${sql(pgTable)}`
      yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`dead-letter:${pgTable}`}`
    }).pipe(Effect.provide(Database.layerPostgres({ url: postgresUrl })))
  )
}, 30_000)

describe("bulwark dlq", () => {
  it("lists, shows and purges the embedded store; bad ids, URLs and replay without a transport fail clearly", async () => {
    const dataDir = join(root, "pglite")
    const env = { BULWARK_DATA_DIR: dataDir }
    const seeded = await seed(Database.layerPglite({ dataDir }), Sql.defaultTable, "orders")

    const listed = await cli(["list", "--category", "dependency"], env)
    // the store in use is the first line on stderr, and the only one
    expect(listed.stderr).toBe(`store: PGlite at ${dataDir} (table ${Sql.defaultTable})\n`)
    expect(listed.code).toBe(0)
    const lines = listed.stdout.trim().split("\n")
    expect(lines[0]).toMatch(/^ID\s+CATEGORY\s+TYPE\s+TOPIC\s+ATTEMPTS\s+LAST FAILED\s+STATUS\s+ERROR$/)
    expect(lines[1]).toContain(seeded.dep1.id)
    expect(lines[1]).toMatch(/dependency\s+order\.paid\s+orders\s+10\s+\S+\s+pending\s+503 from billing/)
    expect(lines[2]).toContain(seeded.dep2.id)
    expect(listed.stdout).toContain("2 entries")
    expect(listed.stdout).not.toContain(seeded.auth.id)

    const shown = await cli(["show", seeded.auth.id], env)
    expect(shown.code).toBe(0)
    expect(shown.stdout).toContain(`id:            ${seeded.auth.id}`)
    expect(shown.stdout).toContain("category:      auth")
    // the contract version the failed message was written with (its CloudEvents dataschema)
    expect(shown.stdout).toContain("schema:        urn:bulwark:contract:orders/order.paid:v3")
    expect(shown.stdout).toContain("HttpError (transient, status 503)")
    expect(shown.stdout).toContain("traceparent: 00-0af7651916cd43dd8448eb211c80319c")
    expect(shown.stdout).toContain('"id":"auth-1"')

    const purged = await cli(["purge", "--older-than", "1d"], env)
    expect(purged.code).toBe(0)
    expect(purged.stdout).toContain("purged 1 entry")

    const missing = await cli(["show", "no-such-id"], env)
    const badUrl = await cli(["list"], { BULWARK_DATABASE_URL: "mysql://root@localhost/x" })
    const noTransport = await cli(["replay", "--category", "dependency"], env)
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain("no entry with id no-such-id")
    expect(missing.stderr).not.toContain("    at ")
    expect(badUrl.code).toBe(2)
    expect(badUrl.stderr).toContain("expected postgres://")
    expect(noTransport.code).toBe(2)
    expect(noTransport.stderr).toContain("set BULWARK_TRANSPORT")

    // What the commands did is in the store: purge removed the old entry, nothing was replayed.
    const after = await Effect.runPromise(
      Effect.flatMap(Sql.make(), (store) => store.list()).pipe(Effect.provide(Database.layerPglite({ dataDir })))
    )
    expect(after.map((e) => e.messageId)).toEqual(["auth-1", "dep-1", "dep-2"])
    expect(after.every((e) => e.replay === "pending")).toBe(true)
  }, 240_000)

  it("works against real Postgres chosen by BULWARK_DATABASE_URL", async () => {
    const topic = `cli-${Date.now().toString(36)}`
    const seeded = await seed(Database.layerPostgres({ url: postgresUrl }), pgTable, topic)
    const env = { BULWARK_DATABASE_URL: postgresUrl, BULWARK_DLQ_TABLE: pgTable }
    const listed = await cli(["list", "--json", "--topic", topic], env)
    expect(listed.code).toBe(0)
    const json = JSON.parse(listed.stdout) as ReadonlyArray<Record<string, any>>
    expect(json.map((e) => e.messageId)).toEqual(["old-1", "auth-1", "dep-1", "dep-2"])
    const dep2 = json.find((e) => e.id === seeded.dep2.id)!
    expect(dep2).toMatchObject({ category: "dependency", type: "order.shipped", originTopic: topic, replay: "pending", attempts: 10 })
    expect(dep2.error).toMatchObject({ tag: "HttpError", status: 503, message: "503 from billing" })
    expect(Buffer.from(dep2.payload, "base64").toString()).toContain('"id":"dep-2"')
  }, 240_000)

  it("a dlq command built with a Publisher replays, rate-limited and once per entry", async () => {
    const dataDir = join(root, "replay")
    const seeded = await seed(Database.layerPglite({ dataDir }), Sql.defaultTable, "orders")
    const published: Array<{ topic: string; id: string }> = []
    const publisher = Layer.succeed(Transport.Publisher, {
      publish: (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) =>
        Effect.sync(() => void published.push(...messages.map((m) => ({ topic, id: m.id }))))
    })
    const run = (args: ReadonlyArray<string>) =>
      Command.run(Cli.make({ publisher }), { name: "bulwark", version: "test" })(["node", "bulwark", ...args]).pipe(
        Effect.provide(NodeContext.layer),
        Effect.withConfigProvider(
          ConfigProvider.fromMap(new Map([["BULWARK_DATA_DIR", dataDir]]))
        ),
        Effect.either,
        Effect.runPromise
      )
    const first = await run(["replay", "--category", "dependency", "--rate", "50"])
    expect(first._tag).toBe("Right")
    const second = await run(["replay", "--id", seeded.dep1.id])
    expect(second._tag).toBe("Right")
    const unknown = await run(["replay", "--id", "no-such-id"])
    expect(unknown._tag === "Left" && (unknown.left as { code?: number }).code).toBe(1)
    expect(published).toEqual([{ topic: "orders", id: "dep-1:replay:1" }, { topic: "orders", id: "dep-2:replay:1" }])
    const entries = await Effect.runPromise(
      Effect.flatMap(Sql.make(), (store) => store.list({ replay: "replayed" })).pipe(
        Effect.provide(Database.layerPglite({ dataDir }))
      )
    )
    expect(entries.map((e) => e.messageId)).toEqual(["dep-1", "dep-2"])
    expect(entries.every((e) => e.replayCount === 1 && e.replayedAt !== null)).toBe(true)
  }, 240_000)

  it("groups lists failure groups by fingerprint; replay --group replays exactly one group; a bad --group is a usage error", async () => {
    const dataDir = join(root, "groups")
    const env = { BULWARK_DATA_DIR: dataDir }
    const failing = (id: string, message: string) => ({
      ...newEntry("orders", id),
      error: new Failure.FailureRecord({ tag: "HttpError", message, classification: "transient", category: "dependency" })
    })
    await Effect.runPromise(
      Effect.gen(function*() {
        const store = yield* Sql.make()
        yield* store.add(failing("g-1", "503 from billing for ord_1"))
        yield* store.add(failing("g-2", "503 from billing for ord_22"))
        yield* store.add(failing("g-3", "card declined: insufficient funds"))
      }).pipe(Effect.provide(Database.layerPglite({ dataDir })))
    )
    const listed = await cli(["groups", "--json"], env)
    expect(listed.code).toBe(0)
    const groups = JSON.parse(listed.stdout) as ReadonlyArray<Record<string, any>>
    expect(groups.map((g) => [g.template, g.count, g.originTopic])).toEqual([
      ["<n> from billing for <id>", 2, "orders"],
      ["card declined: insufficient funds", 1, "orders"]
    ])
    const table = await cli(["groups"], env)
    expect(table.stdout).toContain(groups[0]!.fingerprint)
    expect(table.stdout).toContain("replay one with: bulwark dlq replay --group <GROUP>")

    const published: Array<string> = []
    const publisher = Layer.succeed(Transport.Publisher, {
      publish: (_topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) =>
        Effect.sync(() => void published.push(...messages.map((m) => m.id)))
    })
    const run = (args: ReadonlyArray<string>) =>
      Command.run(Cli.make({ publisher }), { name: "bulwark", version: "test" })(["node", "bulwark", ...args]).pipe(
        Effect.provide(NodeContext.layer),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["BULWARK_DATA_DIR", dataDir]]))),
        Effect.either,
        Effect.runPromise
      )
    const replayed = await run(["replay", "--group", groups[0]!.fingerprint, "--rate", "100"])
    expect(replayed._tag).toBe("Right")
    expect(published.sort()).toEqual(["g-1:replay:1", "g-2:replay:1"])
    const bad = await run(["replay", "--group", "not-a-fingerprint"])
    expect(bad._tag === "Left" && (bad.left as { code?: number }).code).toBe(2)
    const both = await run(["replay", "--group", groups[1]!.fingerprint, "--id", "x"])
    expect(both._tag === "Left" && (both.left as { code?: number }).code).toBe(2)
    expect(published).toHaveLength(2)
    const after = await cli(["groups", "--json"], env)
    expect((JSON.parse(after.stdout) as ReadonlyArray<Record<string, any>>).map((g) => g.count)).toEqual([1])
  }, 240_000)

  it("states the store, refuses to create an embedded one for list/show/replay/purge, and validates every option (exit 2)", async () => {
    const fresh = join(root, "fresh-cwd")
    mkdirSync(fresh, { recursive: true })
    const created = join(root, "created")
    const pgEnv = { BULWARK_DATABASE_URL: postgresUrl.replace("postgres@", "postgres:s3cret-pw@"), BULWARK_DLQ_TABLE: pgTable }
    const runs = await Promise.all([
      cli(["list"], {}, fresh),
      cli(["show", "some-id"], {}, fresh),
      cli(["replay", "--category", "dependency"], { BULWARK_TRANSPORT: "postgres" }, fresh),
      cli(["purge", "--older-than", "30d"], {}, fresh),
      cli(["list"], { BULWARK_DATA_DIR: created, BULWARK_DLQ_CREATE_STORE: "true" }),
      cli(["list", "--limit", "-5"], pgEnv),
      cli(["list", "--limit", "0"], {}, fresh),
      cli(["replay", "--rate", "0"], {}, fresh),
      cli(["replay", "--rate", "1e9"], {}, fresh),
      cli(["purge", "--older-than", "5"], {}, fresh),
      cli(["purge", "--older-than", "999999999d"], {}, fresh),
      cli(["show", " "], {}, fresh),
      cli(["list", "--topic", "or\u0001ders"], {}, fresh),
      cli(["list", "--json", "--topic", "nothing-here"], pgEnv)
    ])
    const [list, show, replay, purge, create, negative, zero, rate0, rateHuge, age, ageHuge, blankId, control, postgres] = runs
    for (const refused of [list!, show!, replay!, purge!]) {
      expect(refused.code).toBe(2)
      expect(refused.stderr).toContain(`no dead-letter store at ${join(fresh, ".bulwark", "pglite")}`)
      expect(refused.stderr).toContain("BULWARK_DLQ_CREATE_STORE=true")
      expect(refused.stdout).not.toContain("no dead-letter entries")
    }
    // nothing was created in the current folder
    expect(existsSync(join(fresh, ".bulwark"))).toBe(false)

    expect(create!.code).toBe(0)
    expect(create!.stderr.split("\n")[0]).toBe(`store: PGlite at ${created} (table ${Sql.defaultTable}; new, created because BULWARK_DLQ_CREATE_STORE is set)`)
    expect(create!.stdout).toContain("no dead-letter entries")

    const usage: ReadonlyArray<readonly [Run, string]> = [
      [negative!, "--limit must be a whole number of at least 1, got -5"],
      [zero!, "--limit must be a whole number of at least 1, got 0"],
      [rate0!, "--rate must be a number of messages per second from 0.01 to 10000, got 0"],
      [rateHuge!, "--rate must be a number of messages per second from 0.01 to 10000, got 1000000000"],
      [age!, `--older-than "5" is not a duration`],
      [ageHuge!, `--older-than "999999999d" is longer than 100 years`],
      [blankId!, "the id must not be empty"],
      [control!, "--topic \"or\\u0001ders\" contains a control character"]
    ]
    for (const [run, message] of usage) {
      expect(run.code).toBe(2)
      expect(run.stderr).toContain(message)
      expect(run.stderr).not.toMatch(/SqlError|syntax|    at /)
    }

    // on Postgres the store line shows the URL with its password masked
    expect(postgres!.code).toBe(0)
    expect(postgres!.stderr).toBe(`store: ${postgresUrl.replace("postgres@", "postgres:***@")} (table ${pgTable})\n`)
    expect(postgres!.stderr).not.toContain("s3cret-pw")
    expect(JSON.parse(postgres!.stdout)).toEqual([])
  }, 240_000)
})
