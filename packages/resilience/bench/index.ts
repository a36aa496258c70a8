/**
 * Per-call overhead of Bulwark's bulkhead and rate limiter against cockatiel's `bulkhead` and
 * rate-limiter-flexible (memory and Redis), side by side in one run.
 *
 * Each library guards a call the way its users call it, and its overhead is the time per guarded call minus
 * the time per bare call in that same idiom, so the figure is what the guard adds, not what Effect or
 * Promises cost:
 * - the peers: an `async` function awaited (`await bulkhead.execute(fn)`, `await limiter.consume(key)`);
 * - Bulwark inside one Effect program (the guard around an Effect in a running fiber: how handlers,
 *   pipelines and senders use it), and Bulwark through `Effect.runPromise` per call (how a Promise-based
 *   caller would use it: one fiber per call, guarded or not).
 * Rounds are interleaved (each round runs every variant, in a rotating order) so load drifts touch all
 * alike; the load average is recorded at the start and the end of each scenario.
 *
 * Wall-clock figures on a loaded 2-core machine swing run to run, so the sequential cases are also counted
 * in instructions under `valgrind --tool=callgrind` (see `instructions.ts`; skipped when valgrind is not
 * installed or BULWARK_BENCH_NO_CALLGRIND is set), which load does not change.
 *
 * Needs Redis on 127.0.0.1:6379 (keys under a unique prefix, deleted afterwards).
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import os from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { bulkhead as cockatielBulkhead } from "cockatiel"
import { Effect, Exit, Layer, Scope } from "effect"
import { Redis } from "ioredis"
import { RateLimiterMemory, RateLimiterRedis } from "rate-limiter-flexible"
import { runtimeSteps, writeResults } from "../../../bench/lib.js"
import * as Bulkhead from "../src/Bulkhead.js"
import * as RateLimiter from "../src/RateLimiter.js"
import * as RateLimiterStore from "../src/RateLimiterStore.js"
import * as RedisStore from "../src/RateLimiterStore/Redis.js"

const ROUNDS = 9
const prefix = `bulwark-bench:rate-limit:${process.pid}:`
const connection = { host: "127.0.0.1", port: 6379 }

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const load = () => os.loadavg().map((l) => l.toFixed(1)).join("/")

/** µs per call of `n` calls of `call` by `callers` concurrent callers, each making its share one at a time. */
const timePromise = async (n: number, callers: number, call: () => Promise<unknown>) => {
  const start = performance.now()
  const caller = async () => {
    for (let i = 0; i < n / callers; i++) await call()
  }
  await (callers === 1 ? caller() : Promise.all(Array.from({ length: callers }, caller)))
  return ((performance.now() - start) * 1000) / n
}

/**
 * µs per call of `n` runs of `call` by `callers` fibers, each running its share one at a time. Concurrent
 * callers are long-lived fibers, as a program's workers are: batches joined by `Effect.all` cost 50–270 µs
 * per call even for `Effect.succeed` on this machine (the fork, join and rescheduling of each batch, idle
 * time included), which drowned the guards' cost and made it overlap with a store's round trip.
 */
const timeEffect = (n: number, callers: number, call: Effect.Effect<unknown, unknown>) =>
  Effect.runPromise(Effect.suspend(() => {
    const start = performance.now()
    const caller = Effect.suspend(() => {
      let i = 0
      return Effect.whileLoop({ while: () => i < n / callers, body: () => call, step: () => void i++ })
    })
    const all = callers === 1 ? caller : Effect.all(Array.from({ length: callers }, () => caller), { concurrency: "unbounded", discard: true })
    return Effect.map(all, () => ((performance.now() - start) * 1000) / n)
  }))

interface Case {
  readonly scenario: string
  readonly batch: number
  readonly calls: number
  readonly bulwark: { readonly name: string; readonly guarded: Effect.Effect<unknown, unknown>; readonly bare: Effect.Effect<unknown> }
  readonly peer: { readonly name: string; readonly guarded: () => Promise<unknown>; readonly bare: () => Promise<unknown> }
}

/** Interleaves every variant's rounds (guarded and bare each), in a rotating order. */
const measure = async (c: Case) => {
  const loadBefore = load()
  const runPromise = (e: Effect.Effect<unknown, unknown>) => () => Effect.runPromise(e)
  const variants = {
    fiber: [() => timeEffect(c.calls, c.batch, c.bulwark.guarded), () => timeEffect(c.calls, c.batch, c.bulwark.bare)],
    runPromise: [
      () => timePromise(c.calls, c.batch, runPromise(c.bulwark.guarded)),
      () => timePromise(c.calls, c.batch, runPromise(c.bulwark.bare))
    ],
    peer: [() => timePromise(c.calls, c.batch, c.peer.guarded), () => timePromise(c.calls, c.batch, c.peer.bare)]
  } as const
  const names = Object.keys(variants) as Array<keyof typeof variants>
  const overhead: Record<keyof typeof variants, Array<number>> = { fiber: [], runPromise: [], peer: [] }
  // Warm-up: JIT, connections, scripts loaded.
  for (const name of names) for (const run of variants[name]) await run()
  for (let r = 0; r < ROUNDS; r++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(r + k) % names.length]!
      const [guarded, bare] = variants[name]
      // Alternate which of the pair goes first, too.
      if (r % 2 === 0) overhead[name].push((await guarded()) - (await bare()))
      else {
        const b = await bare()
        overhead[name].push((await guarded()) - b)
      }
    }
  }
  const fiber = median(overhead.fiber)
  const viaRunPromise = median(overhead.runPromise)
  const peer = median(overhead.peer)
  const row = {
    scenario: c.scenario,
    concurrency: c.batch,
    "Bulwark in one fiber µs/call": fiber.toFixed(3),
    "Bulwark via runPromise µs/call": viaRunPromise.toFixed(3),
    "peer µs/call": peer.toFixed(3),
    "ratio, fiber (goal ≤ 1.0)": (fiber / peer).toFixed(2),
    "ratio, runPromise": (viaRunPromise / peer).toFixed(2),
    "load average 1/5/15 min (before → after)": `${loadBefore} → ${load()}`
  }
  console.log(JSON.stringify(row))
  return row
}

const main = async () => {
  const bare = Effect.succeed(1)
  const bareAsync = async () => 1
  const rows: Array<Record<string, string | number>> = []

  // Bulkheads never full: the overhead of taking and giving back a slot.
  const ourBulkhead = await Effect.runPromise(Bulkhead.make("bench", { maxConcurrent: 100, maxQueue: 100 }))
  const theirBulkhead = cockatielBulkhead(100, 100)
  for (const batch of [1, 10]) {
    rows.push(
      await measure({
        scenario: "bulkhead",
        batch,
        calls: 50_000,
        bulwark: { name: "Bulkhead.execute", guarded: ourBulkhead.execute(bare), bare },
        peer: { name: "cockatiel bulkhead.execute", guarded: () => theirBulkhead.execute(bareAsync), bare: bareAsync }
      })
    )
  }

  // Rate limiters whose limit is never reached: the overhead of a granted permit.
  const ourMemory = await Effect.runPromise(Effect.provide(
    RateLimiter.make("bench", { limit: { kind: "tokenBucket", permits: 1e9, per: "1 second" } }),
    RateLimiterStore.layerMemory
  ))
  const theirMemory = new RateLimiterMemory({ points: 1e9, duration: 1 })
  for (const batch of [1, 10]) {
    rows.push(
      await measure({
        scenario: "rate limiter, memory",
        batch,
        calls: 50_000,
        bulwark: { name: "RateLimiter.withPermit, memory store", guarded: RateLimiter.withPermit(bare, ourMemory, "k"), bare },
        peer: { name: "RateLimiterMemory.consume", guarded: () => theirMemory.consume("k").then(bareAsync), bare: bareAsync }
      })
    )
  }

  // Redis: each library's own connection, with its documented defaults (ours: the store's layer).
  // rate-limiter-flexible's RateLimiterRedis is a fixed-window counter (SET NX, INCRBY, PTTL in one script);
  // Bulwark has no fixed window, so its token bucket (GCRA: GET, PTTL and SET, also constant work per
  // call) is the main comparison, and its sliding window (a log of grant times) is measured too.
  const scope = await Effect.runPromise(Scope.make())
  const redisStore = await Effect.runPromise(Layer.buildWithScope(RedisStore.layer(connection, { prefix }), scope))
  const ourRedis = await Effect.runPromise(Effect.provide(
    RateLimiter.make("bench", { limit: { kind: "tokenBucket", permits: 1e9, per: "1 second" } }),
    redisStore
  ))
  const ourRedisWindow = await Effect.runPromise(Effect.provide(
    RateLimiter.make("bench-window", { limit: { kind: "slidingWindow", limit: 1e9, window: "1 second" } }),
    redisStore
  ))
  const client = new Redis(connection)
  const theirRedis = new RateLimiterRedis({ storeClient: client, keyPrefix: `${prefix}rlf`, points: 1e9, duration: 1 })
  const redisCases = [
    { scenario: "rate limiter, Redis: token bucket vs fixed window", limiter: ourRedis },
    { scenario: "rate limiter, Redis: sliding window vs fixed window", limiter: ourRedisWindow }
  ]
  for (const { limiter, scenario } of redisCases) {
    for (const batch of [1, 10]) {
      rows.push(
        await measure({
          scenario,
          batch,
          calls: 2_000,
          bulwark: { name: "RateLimiter.withPermit, Redis store", guarded: RateLimiter.withPermit(bare, limiter, "k"), bare },
          peer: { name: "RateLimiterRedis.consume", guarded: () => theirRedis.consume("k").then(bareAsync), bare: bareAsync }
        })
      )
    }
  }
  // Server time per reservation: Redis's own count of microseconds spent in EVALSHA (INFO commandstats),
  // which both libraries use. At concurrency 10 the single-threaded server, sharing 2 cores with the
  // client, is what a batch waits for, so its time per script bounds the rate.
  const evalshaStats = async () => {
    const info = await client.info("commandstats")
    const m = /cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(info)
    return m === null ? { calls: 0, usec: 0 } : { calls: Number(m[1]), usec: Number(m[2]) }
  }
  const serverTime = async (call: () => Promise<unknown>) => {
    const before = await evalshaStats()
    await timePromise(2_000, 10, call)
    const after = await evalshaStats()
    return (after.usec - before.usec) / Math.max(1, after.calls - before.calls)
  }
  const serverSides = {
    "Bulwark token bucket": () => Effect.runPromise(RateLimiter.withPermit(bare, ourRedis, "k")),
    "Bulwark sliding window": () => Effect.runPromise(RateLimiter.withPermit(bare, ourRedisWindow, "k")),
    "rate-limiter-flexible fixed window": () => theirRedis.consume("k")
  }
  const serverMicros: Record<string, Array<number>> = {}
  for (let r = 0; r < 5; r++) {
    for (const [name, call] of Object.entries(serverSides)) (serverMicros[name] ??= []).push(await serverTime(call))
  }
  const peerServer = median(serverMicros["rate-limiter-flexible fixed window"]!)
  rows.push({
    scenario: "rate limiter, Redis (server µs per script, INFO commandstats)",
    concurrency: 10,
    "Bulwark in one fiber µs/call": `token bucket ${median(serverMicros["Bulwark token bucket"]!).toFixed(2)}, sliding window ${
      median(serverMicros["Bulwark sliding window"]!).toFixed(2)
    }`,
    "peer µs/call": peerServer.toFixed(2),
    "ratio, fiber (goal ≤ 1.0)": `${(median(serverMicros["Bulwark token bucket"]!) / peerServer).toFixed(2)} (token bucket)`,
    "load average 1/5/15 min (before → after)": load()
  })
  const keys = await client.keys(`${prefix}*`)
  if (keys.length > 0) await client.del(...keys)
  await client.quit()
  await Effect.runPromise(Scope.close(scope, Exit.void))

  const notes = [
    `Overhead = time per guarded call − time per bare call in the same idiom; median of ${ROUNDS} interleaved rounds after a warm-up. Ratio = Bulwark's overhead / the peer's; the goal is ≤ 1.0.`,
    "Idioms: the peers are awaited async functions (`await bulkhead.execute(fn)`, `await limiter.consume(key)`), as their users call them. Bulwark in one fiber: the guard around an Effect inside a running program (how handlers, pipelines and senders use it). Bulwark via runPromise: `await Effect.runPromise(guarded)` per call against `await Effect.runPromise(bare)`, for a Promise-based caller.",
    "Concurrency 1: one call at a time; concurrency 10: 10 concurrent callers (10 fibers, or 10 async loops), each making its share of the calls one at a time. Earlier runs measured concurrency 10 with batches of 10 joined by Effect.all / Promise.all; in one fiber a batch of 10 bare Effect.succeed took 50–270 µs per call at load average 5–10 (forking, joining and rescheduling each batch, idle time included), so that baseline swamped the guards and the subtraction gave arbitrary figures (−0.47 µs for the memory limiter).",
    "Bulkheads: 100 slots and a queue of 100, never full. Rate limiters: token buckets of 1e9 per second, never refusing (the cost of a granted permit). Bulwark's limiter is called as `RateLimiter.withPermit(effect, limiter, key)` (the middleware's path).",
    "Redis: the shared instance on 127.0.0.1:6379; both libraries run one script per permit with EVALSHA (the script cached on the server), one round trip each. Algorithms: rate-limiter-flexible's RateLimiterRedis is a fixed-window counter (SET NX, INCRBY, PTTL); Bulwark has no fixed window, so its token bucket (GCRA: GET, PTTL and SET; constant work per call like the counter) is the main comparison and its sliding window (a log of grant times, 1e9 per second) is measured too. Both read the server's clock: rate-limiter-flexible through its key's TTL, Bulwark's token bucket through its key's expiry (TIME only for a key that has none), its sliding window with TIME. Bulwark's store opens its connection through its layer (its own 1 s reply timeout: one watchdog timer for all calls in flight), rate-limiter-flexible gets a plain ioredis client, as its README shows (no timeout).",
    "Server µs per script: Redis's INFO commandstats count of microseconds spent in EVALSHA over 2,000 reservations by 10 concurrent callers, median of 5 interleaved rounds; the server's time, not the client's. Bulwark's token bucket calls GET, PTTL and SET (it must write a new fractional arrival time each call; with KEEPTTL, the expiry set once a second), its sliding window TIME, LINDEX twice, RPUSH and PTTL; rate-limiter-flexible's counter SET NX, INCRBY and PTTL.",
    "The machine is shared (2 cores, other suites running at the same time): wall-clock figures swing run to run; the callgrind instruction counts below do not depend on load."
  ]

  // Where the Effect guards' cost goes: run-loop iterations per call in the one-fiber idiom (the loop of timeEffect).
  const inLoop = (call: Effect.Effect<unknown, unknown>) => (n: number) => {
    let i = 0
    return Effect.whileLoop({ while: () => i < n, body: () => call, step: () => void i++ })
  }
  const stepsBare = await runtimeSteps(inLoop(bare))
  const stepRows = async (cases: ReadonlyArray<readonly [string, Effect.Effect<unknown, unknown>]>) => {
    for (const [scenario, guarded] of cases) {
      const counted = await runtimeSteps(inLoop(guarded))
      rows.push({
        scenario: `${scenario} (Effect runtime steps per call, one fiber)`,
        concurrency: 1,
        "Bulwark in one fiber µs/call": `${stepsBare.perCall} bare → ${counted.perCall} guarded (${
          Object.entries(counted.byOp).map(([op, n]) => `${op} ${n}`).join(", ")
        })`
      })
    }
  }
  await stepRows([
    ["bulkhead", ourBulkhead.execute(bare)],
    ["rate limiter, memory", RateLimiter.withPermit(bare, ourMemory, "k")]
  ])
  // Reference points: what the same guarantee (a count taken and always given back, the call itself
  // interruptible) costs when built from Effect's own combinators instead of the bulkhead's single mask.
  let held = 0
  const take = Effect.sync(() => void held++)
  const giveBack = Effect.sync(() => void held--)
  const semaphore = await Effect.runPromise(Effect.makeSemaphore(100))
  await stepRows([
    ["reference: Effect's Semaphore.withPermits(1), 100 permits", semaphore.withPermits(1)(bare)],
    ["reference: Effect.acquireUseRelease(take, call, give back)", Effect.acquireUseRelease(take, () => bare, () => giveBack)],
    [
      "reference: Effect.uninterruptibleMask + take + Effect.onExit(restore(call), give back)",
      Effect.uninterruptibleMask((restore) => Effect.zipRight(take, Effect.onExit(restore(bare), () => giveBack)))
    ]
  ])
  notes.push(
    "Effect runtime steps per call: run-loop iterations counted by a supervisor with op supervision on, 10,000 calls in the one-fiber loop, bare and guarded, with the op codes of the guarded call's steps; like instructions, a step count does not move with the load.",
    "The reference rows count the same guarantee built from Effect's own combinators: the bulkhead's fast path (one uninterruptible mask whose body takes the slot synchronously, one exit handler around the restored call, the slot given back synchronously in the handler) takes fewer steps than any of them. A guard that is safe against interruption needs the mask (2 steps: the mask and its flag change), the handler frame (1), the restored interruptibility (1), the flags reverted twice (2) and the handler's answer (1): 7 steps beyond the call's own, and the two flag changes are the dearest steps of the run loop (each reads the fiber's interruption state)."
  )

  if (process.env.BULWARK_BENCH_NO_CALLGRIND === undefined && spawnSync("valgrind", ["--version"]).status === 0) {
    const dir = mkdtempSync(join(os.tmpdir(), "bulwark-callgrind-"))
    try {
      const script = fileURLToPath(new URL("./instructions.ts", import.meta.url))
      const result = spawnSync(process.execPath, ["--conditions=@bulwark/source", "--import", "tsx", script, dir], { stdio: ["ignore", "pipe", "inherit"] })
      const out = result.stdout.toString()
      const marker = out.lastIndexOf("ROWS ")
      if (result.status === 0 && marker >= 0) {
        const counted = JSON.parse(out.slice(marker + 5)) as { rows: Array<Record<string, string | number>>; notes: Array<string> }
        rows.push(...counted.rows)
        notes.push(...counted.notes)
      } else console.error("callgrind run failed", out)
    } finally {
      if (existsSync(dir)) rmSync(dir, { recursive: true, force: true })
    }
  }

  writeResults("resilience", "Bulkhead and rate limiter: overhead per call against cockatiel and rate-limiter-flexible", rows, notes)
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
