import { Outbox } from "@bulwark/outbox"
import { Backoff, Retry } from "@bulwark/retry"
import { Database } from "@bulwark/sql"
import { expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Exit, Fiber, Layer, Logger, Option, Schema } from "effect"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { CursorStore } from "../src/CursorStore.js"
import * as SqlCursorStore from "../src/CursorStore/Sql.js"
import * as Poller from "../src/Poller.js"
import * as Source from "../src/Source.js"

const Payment = Schema.Struct({ id: Schema.String, amount: Schema.Number, updatedAt: Schema.Number })
type Payment = typeof Payment.Type

/**
 * A payments API exposing only `GET /payments?since=<ISO>&limit=n`, changing while it is polled: payments are
 * added and updated, some stamped up to 100 ms in the past (late commits), and some requests answered 429
 * or 503. It counts requests in flight at once.
 */
const paymentsApi = (options: { readonly throttleEvery?: number; readonly retryAfter?: string } = {}) => {
  const payments = new Map<string, Payment>()
  const versions = new Set<string>()
  const requests: Array<number> = []
  let inFlight = 0
  let maxInFlight = 0
  let count = 0
  let mutator: ReturnType<typeof setInterval> | undefined
  let next = 0
  const put = (payment: Payment) => {
    payments.set(payment.id, payment)
    versions.add(`${payment.id}@${payment.updatedAt}`)
  }
  const server: Server = createServer((req, res) => {
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    requests.push(Date.now())
    const n = count++
    const url = new URL(req.url!, "http://localhost")
    // Answer a little later, so overlapping requests would be seen in flight together.
    setTimeout(() => {
      inFlight--
      if (url.pathname !== "/payments") {
        res.writeHead(404).end()
        return
      }
      if (options.throttleEvery !== undefined && n % options.throttleEvery === options.throttleEvery - 1) {
        res.writeHead(n % 2 === 0 ? 429 : 503, { "retry-after": options.retryAfter ?? "0" }).end("slow down")
        return
      }
      const since = url.searchParams.get("since")
      const from = since === null ? -Infinity : Date.parse(since)
      const limit = Number(url.searchParams.get("limit") ?? "1000")
      const page = [...payments.values()].filter((p) => p.updatedAt >= from).sort((a, b) => a.updatedAt - b.updatedAt)
        .slice(0, limit)
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ items: page }))
    }, 3)
  })
  return {
    payments,
    versions,
    requests,
    get maxInFlight() {
      return maxInFlight
    },
    put,
    start: Effect.async<string>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)))
    }),
    mutate: (everyMs: number) =>
      Effect.sync(() => {
        mutator = setInterval(() => {
          const now = Date.now() - Math.floor(Math.random() * 100)
          if (payments.size < 5 || Math.random() < 0.6) put({ id: `p${next++}`, amount: Math.floor(Math.random() * 1000), updatedAt: now })
          else {
            const ids = [...payments.keys()]
            const id = ids[Math.floor(Math.random() * ids.length)]!
            put({ ...payments.get(id)!, amount: Math.floor(Math.random() * 1000), updatedAt: Math.max(now, payments.get(id)!.updatedAt + 1) })
          }
        }, everyMs)
      }),
    stopMutating: Effect.sync(() => clearInterval(mutator)),
    close: Effect.async<void>((resume) => {
      clearInterval(mutator)
      server.closeAllConnections()
      server.close(() => resume(Effect.void))
    })
  }
}

const fastRetry = Retry.policy({ maxAttempts: 6, schedule: Backoff.exponential({ base: "5 millis", cap: "50 millis" }) })

type Step = "after-fetch" | "before-commit" | "after-commit"
const steps: ReadonlyArray<Step> = ["after-fetch", "before-commit", "after-commit"]

/**
 * Crashes at random steps: `plan` lists, for each crash, the step and how many of those steps pass first.
 * A crashed instance does not give its lease up (a killed process would not): the next waits for it to expire.
 */
const crashPlan = (plan: ReadonlyArray<{ readonly step: Step; readonly after: number }>) => {
  let index = 0
  const seen: Record<Step, number> = { "after-fetch": 0, "before-commit": 0, "after-commit": 0 }
  const crashed = new Set<string>()
  const at = (step: Step, holder: string) =>
    Effect.suspend(() => {
      const next = plan[index]
      if (next === undefined || next.step !== step) return Effect.void
      if (seen[step]++ < next.after) return Effect.void
      index++
      crashed.add(holder)
      return Effect.die(`crash ${index} at ${step}`)
    })
  return { at, crashed, get crashes() {
    return index
  } }
}

it.live("polls a changing API through 3 crashes at random steps: every payment version published exactly once, one poller at a time", () =>
  Effect.gen(function*() {
    const api = paymentsApi({ throttleEvery: 9 })
    const base = yield* api.start
    const plan = crashPlan(Array.from({ length: 3 }, () => ({
      step: steps[Math.floor(Math.random() * steps.length)]!,
      after: Math.floor(Math.random() * 4)
    })))
    const table = `bulwark_poll_test_${Date.now().toString(36)}`
    // The current holder of each store call, as the poller names itself in the lease.
    let holderOf = ""
    const store = Layer.effect(
      CursorStore,
      Effect.map(SqlCursorStore.make({ table: `${table}_cursors` }), (real): CursorStore["Type"] => ({
        ...real,
        save: (source, holder, cursor) =>
          real.save(source, holder, cursor).pipe(Effect.zipLeft(plan.at("before-commit", holder))),
        transaction: (effect) =>
          Effect.zipLeft(real.transaction(effect), Effect.suspend(() => plan.at("after-commit", holderOf))),
        // A crashed process gives nothing up.
        release: (source, holder) => plan.crashed.has(holder) ? Effect.void : real.release(source, holder)
      }))
    )
    const fetch = Source.since({
      url: `${base}/payments`,
      schema: Payment,
      key: (p) => p.id,
      time: (p) => p.updatedAt,
      overlap: "300 millis",
      limit: 7
    })
    const instance = (n: number) => {
      const holder = `instance-${n}`
      return Poller.run({
        name: "payments",
        topic: "payments.polled",
        type: "com.example.payment.changed",
        schema: Payment,
        instanceId: holder,
        interval: "20 millis",
        lease: "600 millis",
        retry: fastRetry,
        fetch: (cursor) =>
          Effect.sync(() => holderOf = holder).pipe(
            Effect.zipRight(fetch(cursor)),
            Effect.zipLeft(plan.at("after-fetch", holder))
          )
      }).pipe(Effect.scoped)
    }

    const program = Effect.gen(function*() {
      const outbox = yield* Outbox.make({ table: `${table}_outbox`, notify: false })
      const sql = yield* SqlClient.SqlClient
      let started = 0
      // Two slots, each restarting its instance after a crash: a standby always waits for the lease.
      const slot = Effect.gen(function*() {
        while (true) {
          const exit = yield* Effect.exit(instance(started++))
          expect(Exit.isFailure(exit)).toBe(true)
        }
      })
      const slots = yield* Effect.forkScoped(Effect.all([slot, slot], { concurrency: 2 })).pipe(
        Effect.provideService(Outbox.Outbox, Outbox.fromStore(outbox))
      )
      yield* api.mutate(12)
      // The data keeps changing until the third crash (a crash before a commit needs something to commit).
      yield* Effect.sleep("1500 millis")
      for (let i = 0; i < 300 && plan.crashes < 3; i++) yield* Effect.sleep("50 millis")
      yield* api.stopMutating
      const wanted = () => [...api.payments.values()].map((p) => `payments:${p.id}@${p.updatedAt}`)
      const published = sql<{ message_id: string }>`SELECT message_id FROM ${sql(`${table}_outbox`)} ORDER BY id`
      let rows: ReadonlyArray<{ message_id: string }> = []
      for (let i = 0; i < 200; i++) {
        rows = yield* published
        const have = new Set(rows.map((r) => r.message_id))
        if (plan.crashes === 3 && wanted().every((id) => have.has(id))) break
        yield* Effect.sleep("50 millis")
      }
      yield* Fiber.interrupt(slots)
      return { rows, started }
    }).pipe(Effect.provide(store), Effect.scoped)

    const { rows, started } = yield* program.pipe(Effect.provide(Database.layerPglite()), Effect.ensuring(api.close))
    const ids = rows.map((r) => r.message_id)
    expect(plan.crashes).toBe(3)
    expect(started).toBeGreaterThanOrEqual(5)
    // Exactly once: no version twice, every final version present, nothing the API never had.
    expect(new Set(ids).size).toBe(ids.length)
    for (const p of api.payments.values()) expect(ids).toContain(`payments:${p.id}@${p.updatedAt}`)
    for (const id of ids) expect(api.versions.has(id.slice("payments:".length))).toBe(true)
    expect(api.payments.size).toBeGreaterThan(15)
    // One poller per source: never two requests in flight at once.
    expect(api.maxInFlight).toBe(1)
  }), { timeout: 60_000 })

it.live("honours Retry-After: a 429 asking for 1 s delays the next request by at least that", () =>
  Effect.gen(function*() {
    const api = paymentsApi({ throttleEvery: 1_000_000 })
    api.put({ id: "a", amount: 1, updatedAt: Date.now() })
    const base = yield* api.start
    let first = true
    const table = `bulwark_poll_ra_${Date.now().toString(36)}`
    const fetch = Source.since({ url: `${base}/payments`, schema: Payment, key: (p) => p.id, time: (p) => p.updatedAt })
    const program = Effect.gen(function*() {
      const outbox = yield* Outbox.make({ table: `${table}_outbox`, notify: false })
      const cursors = yield* SqlCursorStore.make({ table: `${table}_cursors` })
      const sql = yield* SqlClient.SqlClient
      const fiber = yield* Poller.run({
        name: "ra",
        topic: "t",
        type: "payment",
        schema: Payment,
        interval: "1 minute",
        retry: fastRetry,
        fetch: (cursor) =>
          Effect.suspend(() =>
            first
              ? Effect.sync(() => first = false).pipe(
                Effect.zipRight(Effect.fail(new Source.PollHttpError({ url: base, status: 429, headers: { "retry-after": "1" }, excerpt: "" })))
              )
              : fetch(cursor)
          )
      }).pipe(
        Effect.scoped,
        Effect.provideService(CursorStore, cursors),
        Effect.provideService(Outbox.Outbox, Outbox.fromStore(outbox)),
        Effect.fork
      )
      const start = Date.now()
      let count = 0
      while (count === 0) {
        yield* Effect.sleep("20 millis")
        count = (yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(`${table}_outbox`)}`)[0]!.n
      }
      yield* Fiber.interrupt(fiber)
      return Date.now() - start
    })
    const elapsed = yield* program.pipe(Effect.provide(Database.layerPglite()), Effect.ensuring(api.close))
    expect(api.requests.length).toBe(1)
    expect(elapsed).toBeGreaterThanOrEqual(1000)
  }), { timeout: 30_000 })

it.live("adapters: an opaque next cursor, ETag with 304, Link rel=next", () =>
  Effect.gen(function*() {
    const seenHeaders: Array<string | undefined> = []
    const server = createServer((req, res) => {
      const url = new URL(req.url!, "http://localhost")
      if (url.pathname === "/cursor") {
        const at = Number(url.searchParams.get("cursor") ?? "0")
        const items = at < 4 ? [{ id: `c${at}`, amount: at, updatedAt: at }, { id: `c${at + 1}`, amount: at, updatedAt: at }] : []
        res.writeHead(200).end(JSON.stringify({ data: items, next: at < 4 ? String(at + 2) : null }))
      } else if (url.pathname === "/etag") {
        seenHeaders.push(req.headers["if-none-match"])
        if (req.headers["if-none-match"] === "\"v1\"") res.writeHead(304).end()
        else res.writeHead(200, { etag: "\"v1\"" }).end(JSON.stringify([{ id: "e1", amount: 1, updatedAt: 5 }]))
      } else {
        const page = Number(url.searchParams.get("page") ?? "1")
        const headers: Record<string, string> = page < 2 ? { link: `</link?page=${page + 1}>; rel="next", </link?page=2>; rel="last"` } : {}
        res.writeHead(200, headers).end(JSON.stringify({ items: [{ id: `l${page}`, amount: page, updatedAt: page }] }))
      }
    })
    const base = yield* Effect.async<string>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)))
    })
    const options = { schema: Payment, key: (p: Payment) => p.id }
    const run = Effect.gen(function*() {
      const cursor = Source.nextCursor({ ...options, url: `${base}/cursor`, nextOf: (b) => (b as { next: string | null }).next })
      const p1 = yield* cursor(Option.none())
      const p2 = yield* cursor(Option.fromNullable(p1.next))
      const p3 = yield* cursor(Option.fromNullable(p2.next))
      expect([...p1.items, ...p2.items].map((i) => i.id)).toEqual(["c0", "c1", "c2", "c3"])
      expect(p3).toMatchObject({ items: [], next: undefined, more: false })

      const tagged = Source.etag({ ...options, url: `${base}/etag`, time: (p) => p.updatedAt })
      const e1 = yield* tagged(Option.none())
      expect(e1.items.map((i) => i.id)).toEqual(["e1@5"])
      const e2 = yield* tagged(Option.fromNullable(e1.next))
      expect(e2.items).toEqual([])
      expect(seenHeaders).toEqual([undefined, "\"v1\""])

      const linked = Source.linkNext({ ...options, url: `${base}/link` })
      const l1 = yield* linked(Option.none())
      expect(l1.more).toBe(true)
      const l2 = yield* linked(Option.fromNullable(l1.next))
      expect(l2.items.map((i) => i.id)).toEqual(["l2"])
      expect(l2).toMatchObject({ more: false, next: `${base}/link?page=2` })

      const bad = yield* Effect.flip(Source.since({ ...options, url: `${base}/etag`, time: (p) => p.id.length })(Option.some("not json")))
      expect(bad._tag).toBe("PollDecodeError")
      const missing = yield* Effect.flip(Source.get(`${base.replace(/:\d+$/, ":1")}/x`))
      expect(missing._tag).toBe("PollFetchError")
    })
    yield* run.pipe(Effect.ensuring(Effect.sync(() => server.close())))
    expect(Source.nextLink(`<https://a.example/x?p=3>; rel="prev", <https://a.example/x?p=5>; rel="next"`, "https://a.example/"))
      .toBe("https://a.example/x?p=5")
  }))

it.effect("`since` pages through items sharing a time, and warns when one instant holds more than a page", () =>
  Effect.gen(function*() {
    // Five items at t=1000, two later; the source answers at most 3 per request, oldest first.
    const items = [
      ...["a", "b", "c", "d", "e"].map((id) => ({ id, amount: 1, updatedAt: 1000 })),
      { id: "f", amount: 1, updatedAt: 1001 },
      { id: "g", amount: 1, updatedAt: 1002 }
    ]
    const request = (url: string) =>
      Effect.sync((): Source.Response => {
        const since = new URL(url).searchParams.get("since")
        const from = since === null ? -Infinity : Date.parse(since)
        return { status: 200, headers: {}, body: { items: items.filter((p) => p.updatedAt >= from).slice(0, 3) } }
      })
    const warnings: Array<string> = []
    const logger = Logger.replace(
      Logger.defaultLogger,
      Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") warnings.push(String(message))
      })
    )
    const fetch = Source.since({ url: "http://source.test/payments", schema: Payment, key: (p) => p.id, time: (p) => p.updatedAt, limit: 3, overlap: "0 millis", request })
    const read: Array<string> = []
    let cursor: Option.Option<string> = Option.none()
    for (let i = 0; i < 6; i++) {
      const page = yield* fetch(cursor).pipe(Effect.provide(logger))
      read.push(...page.items.map((p) => p.subject))
      if (page.next !== undefined) cursor = Option.some(page.next)
    }
    // The first page reads a, b, c; the instant 1000 cannot be paged further, so the poller steps past it,
    // saying so, and reads on from 1001: d and e are the documented loss, never a silent one.
    expect(read).toEqual(["a", "b", "c", "f", "g"])
    expect(warnings.length).toBeGreaterThan(0)
    expect(warnings[0]).toContain("more than 3 items changed at")
    expect(warnings[0]).toContain("raise `limit`")
  }))
