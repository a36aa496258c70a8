// `bulwark webhook endpoints|deliveries|attempts|resend|recover|enable` over a real Postgres store, run as
// processes (each start-up costs seconds, so they run together).
import { Database } from "@bulwark/sql"
import type * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import * as SqlDispatchStore from "../src/DispatchStore/Sql.js"
import { Attempt } from "../src/Sender.js"
import { runCli } from "../../cli/test/support/bin.js"

const url = process.env["BULWARK_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const table = `bulwark_whcli_${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`
const database = Database.layerPostgres({ url })
const withStore = <A>(
  f: (store: Effect.Effect.Success<ReturnType<typeof SqlDispatchStore.make>>) => Effect.Effect<A, unknown, SqlClient.SqlClient>
) => Effect.runPromise(Effect.flatMap(SqlDispatchStore.make({ table }), f).pipe(Effect.provide(database), Effect.orDie))

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}
const run = (args: ReadonlyArray<string>, env: Record<string, string> = { BULWARK_DATABASE_URL: url, BULWARK_WEBHOOK_TABLE: table }): Promise<Result> =>
  runCli(["webhook", ...args], { env }).then(({ code, stderr, stdout }) => ({ code, stdout: stdout.trim(), stderr: stderr.trim() }))

const attempt = (messageId: string, endpointId: string, n: number, status: number) =>
  new Attempt({ endpointId, messageId, attempt: n, at: 1_700_000_000_000 + n, outcome: status < 300 ? "delivered" : "failed", status, latencyMillis: 12, excerpt: "busy" })

describe("bulwark webhook: the dispatcher's store", () => {
  beforeAll(() =>
    withStore((store) =>
      Effect.gen(function*() {
        yield* store.putEndpoint({ id: "acme", url: "https://acme.example/hooks", secrets: ["whsec_YWNtZQ=="] })
        yield* store.putEndpoint({ id: "gone", url: "https://gone.example/hooks", secrets: ["whsec_Z29uZQ=="] })
        yield* store.updateEndpoint("gone", { disabled: true, disabledReason: "410 Gone" })
        const created = 1_700_000_000_000
        yield* store.enqueue({ id: "msg_ok", body: new Uint8Array([123, 125]), createdAt: created }, ["acme"])
        yield* store.enqueue({ id: "msg_bad", body: new Uint8Array([123, 125]), createdAt: created + 1 }, ["acme", "gone"])
        for (const claim of yield* store.claim({ workerId: "w", now: created + 10, limit: 10, leaseMillis: 1_000 })) {
          const ok = claim.message.id === "msg_ok"
          yield* store.settle(claim.token, { messageId: claim.message.id, endpointId: claim.endpoint.id },
            attempt(claim.message.id, claim.endpoint.id, 1, ok ? 200 : 503), ok ? { _tag: "Delivered" } : { _tag: "Failed", reason: "exhausted" }, created + 20)
        }
      })), 60_000)
  afterAll(() => withStore(() => SqlDispatchStore.drop(table)), 60_000)

  it("lists, shows attempts, resends, recovers and enables; says which store; refuses bad input", async () => {
    const [endpoints, failed, attempts, none, badLimit, noStore] = await Promise.all([
      run(["endpoints"]),
      run(["deliveries", "--state", "failed"]),
      run(["attempts", "msg_bad"]),
      run(["attempts", "msg_nope"]),
      run(["deliveries", "--limit", "0"]),
      run(["deliveries"], { BULWARK_DATA_DIR: join(dirname(fileURLToPath(import.meta.url)), "no-such-data-dir") })
    ])
    expect(endpoints.code).toBe(0)
    expect(endpoints.stderr).toContain(`store: postgres://postgres@127.0.0.1:5432/test (tables ${table}_*)`)
    expect(endpoints.stdout).toMatch(/acme\tenabled\thttps:\/\/acme.example\/hooks/)
    expect(endpoints.stdout).toMatch(/gone\tdisabled \(410 Gone\)/)
    expect(failed.stdout.split("\n").map((l) => l.split("\t").slice(0, 3).join(" "))).toEqual([
      "msg_bad acme failed (exhausted)",
      "msg_bad gone failed (exhausted)"
    ])
    expect(attempts.stdout).toContain("acme\t#1\t2023-11-14T22:13:20.001Z\tfailed 503\t12 ms\tbusy")
    expect(none.code).toBe(1)
    expect(none.stderr).toContain("no attempts recorded for msg_nope")
    expect(badLimit.code).toBe(2)
    expect(noStore.code).toBe(1)
    expect(noStore.stderr).toContain("there is no embedded database at")

    const [resent, recovered, enabled, resendUnknown, badSince] = await Promise.all([
      run(["resend", "msg_ok"]),
      run(["recover", "--endpoint", "gone", "--since", "2023-11-14T00:00:00Z"]),
      run(["enable", "gone"]),
      run(["resend", "msg_nope"]),
      run(["recover", "--endpoint", "gone", "--since", "yesterday-ish"])
    ])
    expect(resent).toMatchObject({ code: 0, stdout: "1 delivery due again" })
    expect(recovered).toMatchObject({ code: 0, stdout: "1 failed delivery to gone due again" })
    expect(enabled.code).toBe(0)
    expect(resendUnknown.code).toBe(1)
    expect(badSince.code).toBe(2)
    const state = await withStore((store) =>
      Effect.all([store.deliveries({ state: "pending" }), Effect.map(store.endpoint("gone"), Option.getOrThrow)]))
    expect(state[0].map((d) => `${d.messageId}->${d.endpointId}`).sort()).toEqual(["msg_bad->gone", "msg_ok->acme"])
    expect(state[1].disabled).toBe(false)
  }, 120_000)
})
