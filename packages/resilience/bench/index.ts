/**
 * Per-call overhead of Bulwark's bulkhead and rate limiter against cockatiel's `bulkhead` and
 * rate-limiter-flexible (memory and Redis), side by side in one run. Each library guards a call in its own
 * idiom — Bulwark an Effect inside one running fiber, the peers an `async` function awaited — and its
 * overhead is the time per guarded call minus the time per bare call in that same idiom, so the figure is
 * what the guard adds, not what Effect or Promises cost. Sequential calls (one at a time) and batches of 10
 * concurrent calls. Results go to bench/results/resilience.{json,md}.
 *
 * Needs Redis on 127.0.0.1:6379 (keys under a unique prefix, deleted afterwards).
 */
import { bulkhead as cockatielBulkhead } from "cockatiel"
import { Effect, Layer } from "effect"
import { Redis } from "ioredis"
import { RateLimiterMemory, RateLimiterRedis } from "rate-limiter-flexible"
import { writeResults } from "../../../bench/lib.js"
import * as Bulkhead from "../src/Bulkhead.js"
import * as RateLimiter from "../src/RateLimiter.js"
import * as RateLimiterStore from "../src/RateLimiterStore.js"
import * as RedisStore from "../src/RateLimiterStore/Redis.js"

const ROUNDS = 5
const prefix = `bulwark-bench:rate-limit:${process.pid}:`
const connection = { host: "127.0.0.1", port: 6379 }

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** µs per call of `n` calls of `call`, one at a time or in batches of 10 concurrent ones (Promise idiom). */
const timePromise = async (n: number, batch: number, call: () => Promise<unknown>) => {
  const start = performance.now()
  if (batch === 1) for (let i = 0; i < n; i++) await call()
  else {
    const calls = new Array<Promise<unknown>>(batch)
    for (let i = 0; i < n; i += batch) {
      for (let j = 0; j < batch; j++) calls[j] = call()
      await Promise.all(calls)
    }
  }
  return ((performance.now() - start) * 1000) / n
}

/** µs per call of `n` calls of `call` inside one fiber, one at a time or in batches of 10 (Effect idiom). */
const timeEffect = (n: number, batch: number, call: Effect.Effect<unknown, unknown>) =>
  Effect.suspend(() => {
    const start = performance.now()
    const step = batch === 1 ? call : Effect.all(Array.from({ length: batch }, () => call), { concurrency: "unbounded", discard: true })
    let i = 0
    const loop = Effect.whileLoop({ while: () => i < n, body: () => step, step: () => void (i += batch) })
    return Effect.map(loop, () => ((performance.now() - start) * 1000) / n)
  })

interface Pair {
  readonly scenario: string
  readonly batch: number
  readonly calls: number
  readonly bulwark: { readonly name: string; readonly guarded: Effect.Effect<unknown, unknown>; readonly bare: Effect.Effect<unknown> }
  readonly peer: { readonly name: string; readonly guarded: () => Promise<unknown>; readonly bare: () => Promise<unknown> }
}

/** Interleaves the two libraries' rounds (guarded and bare each), so load drifts touch both alike. */
const measure = (pair: Pair) =>
  Effect.gen(function*() {
    const ours: Array<number> = []
    const theirs: Array<number> = []
    // Warm-up: JIT, connections, scripts loaded.
    yield* timeEffect(Math.min(pair.calls, 1_000), pair.batch, pair.bulwark.guarded)
    yield* Effect.promise(() => timePromise(Math.min(pair.calls, 1_000), pair.batch, pair.peer.guarded))
    for (let r = 0; r < ROUNDS; r++) {
      const guarded = yield* timeEffect(pair.calls, pair.batch, pair.bulwark.guarded)
      const bare = yield* timeEffect(pair.calls, pair.batch, pair.bulwark.bare)
      ours.push(guarded - bare)
      const peerGuarded = yield* Effect.promise(() => timePromise(pair.calls, pair.batch, pair.peer.guarded))
      const peerBare = yield* Effect.promise(() => timePromise(pair.calls, pair.batch, pair.peer.bare))
      theirs.push(peerGuarded - peerBare)
    }
    const o = median(ours)
    const t = median(theirs)
    return {
      scenario: pair.scenario,
      concurrency: pair.batch,
      "Bulwark µs/call": `${o.toFixed(3)} (${pair.bulwark.name})`,
      "peer µs/call": `${t.toFixed(3)} (${pair.peer.name})`,
      "ratio (goal ≤ 1.0)": (o / t).toFixed(2)
    }
  })

const main = Effect.gen(function*() {
  const bare = Effect.succeed(1)
  const bareAsync = async () => 1
  const rows: Array<Record<string, string | number>> = []

  // Bulkheads never full: the overhead of taking and giving back a slot.
  const ourBulkhead = yield* Bulkhead.make("bench", { maxConcurrent: 100, maxQueue: 100 })
  const theirBulkhead = cockatielBulkhead(100, 100)
  for (const batch of [1, 10]) {
    rows.push(yield* measure({
      scenario: "bulkhead",
      batch,
      calls: 100_000,
      bulwark: { name: "Bulkhead.execute", guarded: ourBulkhead.execute(bare), bare },
      peer: { name: "cockatiel bulkhead.execute", guarded: () => theirBulkhead.execute(bareAsync), bare: bareAsync }
    }))
  }

  // Rate limiters whose limit is never reached: the overhead of a granted permit.
  const memory = yield* Layer.build(RateLimiterStore.layerMemory)
  const ourMemory = yield* Effect.provide(
    RateLimiter.make("bench", { limit: { kind: "tokenBucket", permits: 1e9, per: "1 second" } }),
    memory
  )
  const theirMemory = new RateLimiterMemory({ points: 1e9, duration: 1 })
  for (const batch of [1, 10]) {
    rows.push(yield* measure({
      scenario: "rate limiter, memory",
      batch,
      calls: 100_000,
      bulwark: { name: "RateLimiter.acquire, memory store", guarded: Effect.zipRight(ourMemory.acquire("k"), bare), bare },
      peer: { name: "RateLimiterMemory.consume", guarded: () => theirMemory.consume("k").then(bareAsync), bare: bareAsync }
    }))
  }

  const redisStore = yield* Layer.build(RedisStore.layer(connection, { prefix }))
  const ourRedis = yield* Effect.provide(
    RateLimiter.make("bench", { limit: { kind: "tokenBucket", permits: 1e9, per: "1 second" } }),
    redisStore
  )
  const client = new Redis(connection)
  yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
  const theirRedis = new RateLimiterRedis({ storeClient: client, keyPrefix: `${prefix}rlf`, points: 1e9, duration: 1 })
  for (const batch of [1, 10]) {
    rows.push(yield* measure({
      scenario: "rate limiter, Redis",
      batch,
      calls: 3_000,
      bulwark: { name: "RateLimiter.acquire, Redis store (Lua)", guarded: Effect.zipRight(ourRedis.acquire("k"), bare), bare },
      peer: { name: "RateLimiterRedis.consume", guarded: () => theirRedis.consume("k").then(bareAsync), bare: bareAsync }
    }))
  }

  writeResults("resilience", "Bulkhead and rate limiter: overhead per call against cockatiel and rate-limiter-flexible", rows, [
    `Overhead = time per guarded call − time per bare call, each library in its own idiom (Bulwark: Effects in one fiber; peers: awaited async functions); median of ${ROUNDS} interleaved rounds after a warm-up. Ratio = Bulwark's overhead / the peer's; the goal is ≤ 1.0.`,
    "Concurrency 1: one call at a time; concurrency 10: batches of 10 concurrent calls (Effect.all / Promise.all).",
    "Bulkheads: 100 slots and a queue of 100, never full. Rate limiters: token buckets of 1e9 per second, never refusing (the cost of a granted permit).",
    "Redis: the shared instance on 127.0.0.1:6379; Bulwark's store runs one Lua script per permit (EVALSHA, the server's clock), rate-limiter-flexible its own script; both cost about a round trip, so the ratio there compares round trips on a loaded loopback.",
    "The machine is shared (2 cores, other test suites running at the same time; load average well above 2 during the run): absolute figures are noisy, the side-by-side ratios within one run are what to read."
  ])
})

Effect.runPromise(Effect.scoped(main)).then(
  async () => {
    const client = new Redis(connection)
    const keys = await client.keys(`${prefix}*`)
    if (keys.length > 0) await client.del(...keys)
    await client.quit()
  },
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
