/**
 * A shared breaker never blames a call on its store: contention, a failing store and a Redis that dies
 * mid-run cost the breaker some coordination, never a call's result.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Data, Effect, Either, Layer } from "effect"
import { Redis } from "ioredis"
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Breaker from "../src/Breaker.js"
import { BreakerStateStore, StoreError } from "../src/BreakerStateStore.js"
import * as RedisStore from "../src/BreakerStateStore/Redis.js"

class Unavailable extends Data.TaggedError("Unavailable")<{ readonly n: number }> {}

const prefix = `bulwark-test:breaker-shared:${process.pid}-${Date.now()}:`
const connection = { host: "127.0.0.1", port: 6379 }

/** A call with a side effect: it counts itself, waits a little and fails when `n` says so. */
const callFor = (ran: Array<number>, n: number, fails: boolean) =>
  Effect.suspend(() => {
    ran.push(n)
    return Effect.zipRight(Effect.sleep("1 millis"), fails ? Effect.fail(new Unavailable({ n })) : Effect.succeed(n))
  })

describe("shared breaker under contention", () => {
  it.live("4 instances × concurrency 50 over one Redis key: 400 calls, only the calls' own errors, every outcome counted", () =>
    Effect.gen(function*() {
      const key = `contention-${Date.now()}`
      // Thresholds the run cannot reach: the breaker stays closed and every call must be made.
      const options: Breaker.Options = { window: { kind: "count", size: 1000 }, minimumCalls: 1000, failureRateThreshold: 1 }
      // One connection per instance, as four processes would have.
      const instances = yield* Effect.forEach(Array.from({ length: 4 }), () =>
        Effect.flatMap(Layer.build(RedisStore.layer(connection, { prefix })), (store) =>
          Effect.provide(Breaker.makeShared(key, options), store)))
      const ran: Array<number> = []
      const results = yield* Effect.forEach(instances, (breaker, i) =>
        Effect.forEach(Array.from({ length: 100 }, (_, j) => i * 100 + j), (n) =>
          Effect.either(breaker.execute(callFor(ran, n, n % 10 === 0))), { concurrency: 50 }), { concurrency: "unbounded" })
      const errors = results.flat().filter(Either.isLeft).map((e) => e.left)
      // Exactly the 40 planned failures, each the call's own error; nothing from the store.
      expect(errors.filter((e) => !(e instanceof Unavailable))).toEqual([])
      expect(errors).toHaveLength(40)
      expect(ran).toHaveLength(400)
      expect(new Set(ran).size).toBe(400)
      // The shared state converged: one window counting every call of every instance.
      for (const b of instances) expect(yield* b.state).toBe("closed")
      const stored = yield* instances[0]!.toJSON
      expect(stored.window).toMatchObject({ kind: "count", calls: 400, failures: 40 })
    }).pipe(Effect.scoped), 60_000)
})

/** A store that fails every operation (Redis down, a network partition). */
const failingStore = Layer.succeed(BreakerStateStore, BreakerStateStore.of({
  modify: (key) => Effect.fail(new StoreError({ operation: "modify", key, cause: "unreachable" })),
  get: (key) => Effect.fail(new StoreError({ operation: "read", key, cause: "unreachable" }))
}))

describe("shared breaker over a failing store", () => {
  it.live("every call is made and answers its own result; the breaker still trips on this instance's failures", () =>
    Effect.gen(function*() {
      const b = yield* Breaker.makeShared("unreachable", { window: { kind: "consecutive", threshold: 3 }, openDuration: "1 minute" })
      const ran: Array<number> = []
      const ok = yield* Effect.forEach([1, 2, 3], (n) => b.execute(callFor(ran, n, false)), { concurrency: 3 })
      expect(ok).toEqual([1, 2, 3])
      const failed = yield* Effect.forEach([4, 5, 6], (n) => Effect.flip(b.execute(callFor(ran, n, true))))
      expect(failed.map((e) => e._tag)).toEqual(["Unavailable", "Unavailable", "Unavailable"])
      expect(ran).toEqual([1, 2, 3, 4, 5, 6])
      // Tripped locally: the next call is rejected without being made.
      expect(yield* Effect.flip(b.execute(callFor(ran, 7, false)))).toBeInstanceOf(Breaker.BreakerOpen)
      expect(ran).toHaveLength(6)
      expect(yield* b.state).toBe("open")
      // Manual control must reach the store, so it says when it cannot.
      expect(yield* Effect.flip(b.reset)).toBeInstanceOf(StoreError)
    }).pipe(Effect.provide(failingStore)))
})

const sparePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port")))
    })
  })

/** A private redis-server on a spare port, stopped by its pid (never the shared one). */
const privateRedis = (port: number, dir: string) =>
  Effect.acquireRelease(
    Effect.async<{ readonly kill: () => void }, Error>((resume) => {
      const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"], {
        stdio: ["ignore", "pipe", "pipe"]
      })
      let out = ""
      proc.stdout.on("data", (chunk) => {
        out += String(chunk)
        if (out.includes("Ready to accept connections")) resume(Effect.succeed({ kill: () => proc.kill("SIGKILL") }))
      })
      proc.on("exit", (code) => resume(Effect.fail(new Error(`redis-server exited with ${code}: ${out}`))))
    }),
    (server) => Effect.sync(server.kill)
  )

describe("shared breaker when Redis dies", () => {
  const dir = mkdtempSync(join(tmpdir(), "bulwark-breaker-redis-"))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it.live("calls keep running and the breaker keeps judging locally; after Redis returns the outcomes are merged", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(sparePort)
      const first = yield* privateRedis(port, dir)
      const options: Breaker.Options = {
        window: { kind: "count", size: 100 },
        minimumCalls: 20,
        failureRateThreshold: 0.5,
        openDuration: "1 minute",
        sharing: { retryInterval: "100 millis" }
      }
      // Commands fail after one reconnection attempt instead of waiting in ioredis's offline queue.
      const store = RedisStore.layer({ host: "127.0.0.1", port, maxRetriesPerRequest: 0, retryStrategy: () => 100 })
      const b = yield* Effect.provide(Breaker.makeShared("dies", options), yield* Layer.build(store))
      const ran: Array<number> = []
      for (let n = 0; n < 10; n++) expect(yield* b.execute(callFor(ran, n, false))).toBe(n)
      // Redis dies (its process is killed, not closed politely).
      first.kill()
      yield* Effect.sleep("200 millis")
      for (let n = 10; n < 20; n++) expect(yield* b.execute(callFor(ran, n, false))).toBe(n)
      // 20 failures of 40 calls: the instance trips on what it counted itself.
      for (let n = 20; n < 40; n++) {
        const result = yield* Effect.either(b.execute(callFor(ran, n, true)))
        expect(Either.isLeft(result) && result.left).toBeInstanceOf(Unavailable)
      }
      expect(ran).toHaveLength(40)
      expect(yield* Effect.flip(b.execute(callFor(ran, 40, false)))).toBeInstanceOf(Breaker.BreakerOpen)
      expect(ran).toHaveLength(40)
      // Redis comes back (empty): the outcomes counted while it was away reach it.
      yield* privateRedis(port, dir)
      const client = new Redis({ host: "127.0.0.1", port })
      yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
      let stored: Breaker.Snapshot | undefined
      for (let i = 0; i < 200 && stored?.state !== "open"; i++) {
        yield* Effect.sleep("100 millis")
        yield* Effect.either(b.state)
        const json = yield* Effect.promise(() => client.hget("bulwark:breaker:dies", "s"))
        stored = json === null ? undefined : JSON.parse(json)
      }
      expect(stored?.state).toBe("open")
    }).pipe(Effect.scoped), 60_000)
})

afterAll(async () => {
  const client = new Redis(connection)
  const keys = await client.keys(`${prefix}*`)
  if (keys.length > 0) await client.del(...keys)
  await client.quit()
})
