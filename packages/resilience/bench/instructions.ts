/**
 * Instructions per call of the guards (Bulwark's bulkhead and memory and Redis rate limiters, cockatiel's
 * bulkhead, rate-limiter-flexible's memory and Redis limiters), counted by `valgrind --tool=callgrind` in
 * the calling process: unlike wall time, an instruction count does not move with the machine's load.
 *
 * `instructions.ts <dir>` runs itself under callgrind with `<dir>` for the profile files and prints the
 * rows (after "ROWS "). The child calls `os.uptime()` (libuv's `uv_uptime`, called nowhere else) between
 * phases; callgrind dumps and zeroes its counters there (`--dump-before=uv_uptime`), so each dump holds one
 * phase: per case a warm-up, then the measured calls. Per call = the measured phase's instructions / calls;
 * overhead = guarded − bare in the same idiom, as in the wall-clock bench.
 */
import { spawnSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import os from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { bulkhead as cockatielBulkhead } from "cockatiel"
import { Effect, Exit, Layer, Scope } from "effect"
import { Redis } from "ioredis"
import { RateLimiterMemory, RateLimiterRedis } from "rate-limiter-flexible"
import * as Bulkhead from "../src/Bulkhead.js"
import * as RateLimiter from "../src/RateLimiter.js"
import * as RateLimiterStore from "../src/RateLimiterStore.js"
import * as RedisStore from "../src/RateLimiterStore/Redis.js"

const CALLS = 40_000
const WARMUP = 10_000
// A Redis reservation is a round trip: fewer calls, the client's instructions only (the server is not traced).
const REDIS_CALLS = 4_000
const REDIS_WARMUP = 500
const connection = { host: "127.0.0.1", port: 6379 }
const prefix = `bulwark-bench:callgrind:${process.pid}:`

type Idiom = "fiber" | "runPromise" | "promise"
interface Case {
  readonly idiom: Idiom
  readonly name: string
  readonly run: (n: number) => Promise<void>
  readonly calls: number
  readonly warmup: number
}

const child = async () => {
  const bare = Effect.succeed(1)
  const bareAsync = async () => 1
  const bulkhead = await Effect.runPromise(Bulkhead.make("bench", { maxConcurrent: 100, maxQueue: 100 }))
  const limiter = await Effect.runPromise(Effect.provide(
    RateLimiter.make("bench", { limit: { kind: "tokenBucket", permits: 1e9, per: "1 second" } }),
    RateLimiterStore.layerMemory
  ))
  const theirBulkhead = cockatielBulkhead(100, 100)
  const theirLimiter = new RateLimiterMemory({ points: 1e9, duration: 1 })
  const scope = await Effect.runPromise(Scope.make())
  const redisStore = await Effect.runPromise(Layer.buildWithScope(RedisStore.layer(connection, { prefix }), scope))
  const redisLimiter = await Effect.runPromise(Effect.provide(
    RateLimiter.make("bench", { limit: { kind: "tokenBucket", permits: 1e9, per: "1 second" } }),
    redisStore
  ))
  const client = new Redis(connection)
  const theirRedis = new RateLimiterRedis({ storeClient: client, keyPrefix: `${prefix}rlf`, points: 1e9, duration: 1 })
  // A full collection at the end of each warm-up: every measured phase starts from a clean heap, so a major
  // collection of garbage left by earlier cases does not fall into it (a phase of 2 000 Redis calls would
  // carry a whole collection); its own allocations are collected as they happen.
  const collect = (globalThis as { gc?: () => void }).gc ?? (() => undefined)
  const inFiber = (e: Effect.Effect<unknown, unknown>) => (n: number) => {
    let i = 0
    return Effect.runPromise(Effect.whileLoop({ while: () => i < n, body: () => e, step: () => void i++ }))
  }
  const perCall = (e: Effect.Effect<unknown, unknown>) => async (n: number) => {
    for (let i = 0; i < n; i++) await Effect.runPromise(e)
  }
  const awaited = (f: () => Promise<unknown>) => async (n: number) => {
    for (let i = 0; i < n; i++) await f()
  }
  const memory = { calls: CALLS, warmup: WARMUP }
  const redis = { calls: REDIS_CALLS, warmup: REDIS_WARMUP }
  const cases: Array<Case> = [
    { idiom: "fiber", name: "bare", run: inFiber(bare), ...memory },
    { idiom: "fiber", name: "bulkhead", run: inFiber(bulkhead.execute(bare)), ...memory },
    { idiom: "fiber", name: "limiter", run: inFiber(RateLimiter.withPermit(bare, limiter, "k")), ...memory },
    { idiom: "fiber", name: "redis", run: inFiber(RateLimiter.withPermit(bare, redisLimiter, "k")), ...redis },
    { idiom: "runPromise", name: "bare", run: perCall(bare), ...memory },
    { idiom: "runPromise", name: "bulkhead", run: perCall(bulkhead.execute(bare)), ...memory },
    { idiom: "runPromise", name: "limiter", run: perCall(RateLimiter.withPermit(bare, limiter, "k")), ...memory },
    { idiom: "runPromise", name: "redis", run: perCall(RateLimiter.withPermit(bare, redisLimiter, "k")), ...redis },
    { idiom: "promise", name: "bare", run: awaited(bareAsync), ...memory },
    { idiom: "promise", name: "bulkhead", run: awaited(() => theirBulkhead.execute(bareAsync)), ...memory },
    { idiom: "promise", name: "limiter", run: awaited(() => theirLimiter.consume("k").then(bareAsync)), ...memory },
    { idiom: "promise", name: "redis", run: awaited(() => theirRedis.consume("k").then(bareAsync)), ...redis }
  ]
  // The Redis cases are measured twice, the second time in the reverse order, and averaged: a phase of 4 000
  // round trips still catches a young-generation collection more or less, and whichever case comes first
  // would meet a shared code path's last optimisation.
  const again = cases.filter((c) => c.name === "redis").reverse()
  console.log("CASES " + JSON.stringify([...cases, ...again].map((c) => ({ name: `${c.idiom}:${c.name}`, calls: c.calls }))))
  // Every case warmed once before any is measured: the first Redis case measured used to pay for compiling
  // the code the three share (ioredis's command and reply paths, the socket's): 350 000–400 000 instructions
  // per call, against 190 000–250 000 for the same case measured again after the others.
  for (const c of cases) await c.run(c.warmup)
  collect()
  os.uptime() // dump: start-up and the first warm-up
  for (const c of [...cases, ...again]) {
    await c.run(c.warmup)
    collect()
    os.uptime() // dump: warm-up
    await c.run(c.calls)
    os.uptime() // dump: measured
  }
  const keys = await client.keys(`${prefix}*`)
  if (keys.length > 0) await client.del(...keys)
  await client.quit()
  await Effect.runPromise(Scope.close(scope, Exit.void))
}

/**
 * Instructions V8's optimising compiler (TurboFan, Maglev) spent in one callgrind dump: the self cost of its
 * functions. Names are compressed in the format: `fn=(id) name` the first time, `fn=(id)` after, and a
 * `calls=` line's next line is the callee's inclusive cost, not the caller's own.
 */
const compiling = (text: string) => {
  const names = new Map<string, string>()
  const name = (spec: string) => {
    const m = /^\((\d+)\)(?: (.*))?$/.exec(spec)
    if (m === null) return spec
    if (m[2] !== undefined) names.set(m[1]!, m[2])
    return names.get(m[1]!) ?? ""
  }
  let inCompiler = false
  let inclusive = false
  let sum = 0
  for (const line of text.split("\n")) {
    if (line.startsWith("fn=")) inCompiler = /v8::internal::(compiler|maglev)::/.test(name(line.slice(3)))
    else if (line.startsWith("cfn=")) name(line.slice(4))
    else if (line.startsWith("calls=")) inclusive = true
    else if (/^[+\-*0-9]/.test(line)) {
      if (inclusive) inclusive = false
      else if (inCompiler) sum += Number(line.trim().split(/\s+/).at(-1))
    }
  }
  return sum
}

const parent = (dir: string) => {
  const self = fileURLToPath(import.meta.url)
  const result = spawnSync("valgrind", [
    "--tool=callgrind",
    "--dump-before=uv_uptime",
    `--callgrind-out-file=${join(dir, "callgrind.out")}`,
    process.execPath,
    // No V8 helper threads: valgrind serialises them anyway, and their work would blur the counts.
    "--single-threaded",
    "--expose-gc",
    "--conditions=@bulwark/source",
    "--import",
    "tsx",
    self,
    "--child"
  ], { stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 * 1024 * 1024 })
  const out = result.stdout.toString()
  if (result.status !== 0) throw new Error(`callgrind run failed: ${result.stderr.toString().slice(-2000)}`)
  const cases = JSON.parse(out.slice(out.indexOf("CASES ") + 6).split("\n")[0]!) as Array<{ name: string; calls: number }>
  // Dumps are numbered in order; each holds the instructions since the previous one.
  const dumps = readdirSync(dir)
    .map((f) => /^callgrind\.out\.(\d+)$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b)
    .map((n) => readFileSync(join(dir, `callgrind.out.${n}`), "utf8"))
  if (dumps.length < 1 + 2 * cases.length) throw new Error(`expected ${1 + 2 * cases.length} dumps, got ${dumps.length}`)
  const total = (text: string) => Number(/^(?:summary|totals):\s*(\d+)/m.exec(text)?.[1] ?? 0)
  const perCall = new Map<string, number>()
  const measured = new Map<string, Array<number>>()
  const compiled = new Map<string, Array<number>>()
  cases.forEach((c, i) => {
    const text = dumps[1 + 2 * i + 1]!
    measured.set(c.name, [...(measured.get(c.name) ?? []), total(text) / c.calls])
    compiled.set(c.name, [...(compiled.get(c.name) ?? []), compiling(text) / c.calls])
  })
  for (const [name, runs] of measured) perCall.set(name, runs.reduce((a, b) => a + b, 0) / runs.length)
  const redisRuns = [...measured].filter(([name]) => name.endsWith(":redis"))
    .map(([name, runs]) => `${name.split(":")[0]} ${runs.map((r) => Math.round(r)).join(" and ")}`).join(", ")
  const redisCompiled = [...compiled].filter(([name]) => name.endsWith(":redis"))
    .map(([name, runs]) => `${name.split(":")[0]} ${runs.map((r) => Math.round(r)).join(" and ")}`).join(", ")
  const overhead = (idiom: Idiom, name: string) => perCall.get(`${idiom}:${name}`)! - perCall.get(`${idiom}:bare`)!
  const row = (scenario: string, name: string) => {
    const fiber = overhead("fiber", name)
    const viaRunPromise = overhead("runPromise", name)
    const peer = overhead("promise", name)
    return {
      scenario: `${scenario} (callgrind, instructions per call)`,
      concurrency: 1,
      "Bulwark in one fiber µs/call": `${Math.round(fiber)} instr`,
      "Bulwark via runPromise µs/call": `${Math.round(viaRunPromise)} instr`,
      "peer µs/call": `${Math.round(peer)} instr`,
      "ratio, fiber (goal ≤ 1.0)": (fiber / peer).toFixed(2),
      "ratio, runPromise": (viaRunPromise / peer).toFixed(2),
      "load average 1/5/15 min (before → after)": "(instruction counts do not depend on load)"
    }
  }
  const bare = (idiom: Idiom) => Math.round(perCall.get(`${idiom}:bare`)!)
  const rows = [row("bulkhead", "bulkhead"), row("rate limiter, memory", "limiter"), row("rate limiter, Redis", "redis")]
  const notes = [
    `Callgrind rows: instructions per call under \`valgrind --tool=callgrind\` (${CALLS} measured calls after ${WARMUP} warm-up calls per in-memory case, ${REDIS_CALLS} after ${REDIS_WARMUP} per Redis case, one at a time; for Redis only the client process is counted, not the server), overhead = guarded − bare in the same idiom; the bare calls themselves cost ${bare("fiber")} instructions in one fiber, ${bare("runPromise")} through Effect.runPromise and ${bare("promise")} as an awaited async function. Node runs with --single-threaded (no V8 helper threads), so the counts include garbage collection done on the main thread; a full collection ends each warm-up (counted there), so a measured phase starts from a clean heap and pays for its own allocations, not a major collection of earlier garbage. The Redis case is Bulwark's token bucket against rate-limiter-flexible's fixed-window RateLimiterRedis. Every case is warmed up once before any is measured (earlier runs warmed each case just before measuring it, so the first Redis case measured, Bulwark's in one fiber, paid for optimising the ioredis and socket code all three share: in trial runs 350 000–400 000 instructions per call for whichever Redis case came first, 190 000–250 000 for the same case measured again after the others); the Redis cases are measured twice, the second time in the reverse order, and averaged (guarded calls, instructions per call in each pass: ${redisRuns}). With 2 000 calls per phase a pass's figure moved by up to ±55 000 between passes (young-generation collections fall into a phase or not), hence 4 000: compare the two passes before reading a Redis ratio to the second decimal. Of those, V8's optimising compiler (the self cost of its functions; with --single-threaded it compiles on the main thread, inside the phase): ${redisCompiled} instructions per call. In trial runs it was 64 000–96 000 per call in either library, 40–50 % of the Redis figures, and it stayed there with the full collection moved before the warm-up (71 000–75 000): code is still being optimised, or optimised again, after 500 + 4 000 calls, so a Redis ratio moves with how much compiling falls into each library's phase, not only with the work of a call.`
  ]
  console.log("ROWS " + JSON.stringify({ rows, notes }))
}

if (process.argv[2] === "--child") {
  child().catch((error) => {
    console.error(error)
    process.exit(1)
  })
} else parent(process.argv[2] ?? os.tmpdir())
