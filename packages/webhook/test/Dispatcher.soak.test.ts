// The dispatcher soak, small: 1,000 messages over 20 local endpoints (2 answering 410 after a while, 3 failing
// 30% of their requests), two workers over one PostgreSQL store, restarted mid-run. Every message reaches its
// healthy endpoint exactly once (a second time only after an attempt whose answer was not seen in time);
// attempts are queryable after the restart.
// `npm run bench -- webhook` runs the 10,000-message version.
import { Database } from "@bulwark/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as SqlDispatchStore from "../src/DispatchStore/Sql.js"
import { soak } from "./support/soak.js"

const url = process.env["BULWARK_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"

describe("dispatcher soak", () => {
  it.live("1,000 messages, 20 endpoints, failures, 410s and a restart: each delivered once to every healthy endpoint", () =>
    Effect.gen(function*() {
      const table = `bulwark_whsoak_${Date.now().toString(36)}`
      const report = yield* soak({
        messages: 1_000,
        endpoints: 20,
        goneEndpoints: 2,
        goneAfter: 10,
        flakyEndpoints: 3,
        failureRate: 0.3,
        restartAt: 0.4,
        table
      }).pipe(Effect.ensuring(Effect.orDie(SqlDispatchStore.drop(table))))
      // A request whose answer came too late for its attempt's timeout (a starved event loop on a loaded machine
      // can do that to a local endpoint) is recorded as a timeout and sent again: at least once, by design. Every
      // other repeated success is a duplicate.
      const duplicates = [...report.successes].filter(([id, n]) => n > 1 && !report.unseenAnswer.has(id))
      expect(duplicates).toEqual([])
      const undelivered = [...report.endpointOf].filter(([id, e]) => !report.gone.has(e) && (report.successes.get(id) ?? 0) === 0)
      expect(undelivered).toEqual([])
      expect(report.gone.size).toBe(2)
      expect(report.states["pending"]).toBe(0)
      // Each gone endpoint answers 2xx to its first 10 requests, then 410: the rest of its 50 messages failed
      // (gone, then disabled). A message whose 2xx came too late for its attempt's timeout was sent again and
      // may have met the 410: it may be failed too.
      const toGone = [...report.endpointOf].filter(([, e]) => report.gone.has(e))
      const answered = toGone.filter(([id]) => (report.successes.get(id) ?? 0) > 0)
      const unseen = answered.filter(([id]) => report.unseenAnswer.has(id)).length
      expect(toGone).toHaveLength(2 * 50)
      expect(answered.length).toBeLessThanOrEqual(2 * 10)
      expect(report.states["failed"]).toBeGreaterThanOrEqual(toGone.length - answered.length)
      expect(report.states["failed"]).toBeLessThanOrEqual(toGone.length - answered.length + unseen)
      expect((report.states["delivered"] ?? 0) + (report.states["failed"] ?? 0)).toBe(1_000)
      expect(report.sampleAttempts).toBeGreaterThanOrEqual(50)
    }).pipe(Effect.provide(Database.layerPostgres({ url }))), 300_000)
})
