/**
 * First the breaker alone against cockatiel's, per call (`perCall.ts`: wall time and callgrind instruction
 * counts). Then a shared breaker under contention: 4 instances (each with its own store connection, as 4 processes
 * would have) × concurrency 50 calling through one key. Measures calls/s, spurious errors (anything but
 * the call's own result) and the overhead per call against the same load without a breaker and through
 * an in-process breaker. Results go to bench/results/circuit-breaker.{json,md}.
 *
 * Needs Redis on 127.0.0.1:6379 (keys under a unique prefix, deleted afterwards).
 */
import { Effect, Either, Layer } from "effect"
import os from "node:os"
import { Redis } from "ioredis"
import { writeResults } from "../../../bench/lib.js"
import * as Breaker from "../src/Breaker.js"
import * as BreakerStateStore from "../src/BreakerStateStore.js"
import * as RedisStore from "../src/BreakerStateStore/Redis.js"
import * as PerCall from "./perCall.js"

const INSTANCES = 4
const CONCURRENCY = 50
const CALLS_PER_INSTANCE = 2_500
const ROUNDS = 3
const prefix = `bulwark-bench:breaker:${process.pid}:`
const connection = { host: "127.0.0.1", port: 6379 }

// Thresholds the run cannot reach: every call is made, so every error is spurious.
const options: Breaker.Options = { window: { kind: "count", size: 100 }, minimumCalls: 100, failureRateThreshold: 1.01 }

/** The downstream: 1 ms of waiting, like a fast remote call. */
const downstream = Effect.sleep("1 millis")

type Execute = <A, E>(self: Effect.Effect<A, E>) => Effect.Effect<A, unknown>

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** One round: every instance runs its calls at the concurrency; answers calls/s and the errors seen. */
const round = (executes: ReadonlyArray<Execute>) =>
  Effect.gen(function*() {
    const start = performance.now()
    const results = yield* Effect.forEach(executes, (execute) =>
      Effect.forEach(Array.from({ length: CALLS_PER_INSTANCE }), () => Effect.either(execute(downstream)), {
        concurrency: CONCURRENCY
      }), { concurrency: "unbounded" })
    const seconds = (performance.now() - start) / 1000
    const errors = results.flat().filter(Either.isLeft).length
    return { rate: (INSTANCES * CALLS_PER_INSTANCE) / seconds, errors }
  })

const measure = (name: string, make: Effect.Effect<ReadonlyArray<Execute>, unknown, import("effect/Scope").Scope>) =>
  Effect.scoped(Effect.gen(function*() {
    const executes = yield* make
    yield* round(executes) // warm-up
    const rates: Array<number> = []
    let errors = 0
    for (let r = 0; r < ROUNDS; r++) {
      const result = yield* round(executes)
      rates.push(result.rate)
      errors += result.errors
    }
    return { name, rate: median(rates), errors, calls: ROUNDS * INSTANCES * CALLS_PER_INSTANCE }
  }))

const main = Effect.gen(function*() {
  // The breaker alone first, while nothing else of this benchmark runs.
  const loadBefore = os.loadavg()[0]!
  const timed = yield* Effect.promise(() => PerCall.wall())
  const wall = timed.wall
  const cpu = timed.cpu
  const loadAfterWall = os.loadavg()[0]!
  const counted = yield* Effect.promise(() => PerCall.instructions())
  const steps = yield* Effect.promise(() => PerCall.steps())
  type Guarded = "bulwark" | "bulwark-call" | "floor-observe" | "floor-decide-observe" | "cockatiel"
  type Bare = "bulwark-bare" | "bulwark-call-bare" | "cockatiel-bare"
  const ns = (guarded: Guarded, bare: Bare) => wall[guarded] - wall[bare]
  const cpuNs = (guarded: Guarded, bare: Bare) => cpu[guarded] - cpu[bare]
  const ins = (guarded: Guarded, bare: Bare) =>
    counted === undefined ? undefined : counted[guarded] - counted[bare]
  const bulwarkNs = ns("bulwark", "bulwark-bare")
  const cockatielNs = ns("cockatiel", "cockatiel-bare")
  const bulwarkIns = ins("bulwark", "bulwark-bare")
  const cockatielIns = ins("cockatiel", "cockatiel-bare")
  const callNs = ns("bulwark-call", "bulwark-call-bare")
  const callIns = ins("bulwark-call", "bulwark-call-bare")
  const bulwarkCpu = cpuNs("bulwark", "bulwark-bare")
  const callCpu = cpuNs("bulwark-call", "bulwark-call-bare")
  const cockatielCpu = cpuNs("cockatiel", "cockatiel-bare")
  const stepsOf = (guarded: Exclude<Guarded, "cockatiel">, bare: Exclude<Bare, "cockatiel-bare">) =>
    `${steps[bare].perCall} → ${steps[guarded].perCall} (${Object.entries(steps[guarded].byOp).map(([op, n]) => `${op} ${n}`).join(", ")})`
  const ourRow = (scenario: string, overheadNs: number, cpuOverhead: number, instructions: number | undefined, stepCount: string) => ({
    scenario,
    "overhead ns/call": overheadNs.toFixed(0),
    "overhead CPU ns/call": cpuOverhead.toFixed(0),
    "instructions/call": instructions === undefined ? "n/a" : instructions.toFixed(0),
    "Effect runtime steps/call, bare → guarded": stepCount,
    "vs cockatiel (wall)": `${(overheadNs / cockatielNs).toFixed(2)}×`,
    "vs cockatiel (CPU)": `${(cpuOverhead / cockatielCpu).toFixed(2)}×`,
    "vs cockatiel (instructions)": instructions === undefined ? "n/a" : `${(instructions / cockatielIns!).toFixed(2)}×`
  })
  const perCallRows = [
    ourRow(
      "breaker alone: success through a closed Bulwark breaker (consecutive window), call = Effect.succeed(1)",
      bulwarkNs,
      bulwarkCpu,
      bulwarkIns,
      stepsOf("bulwark", "bulwark-bare")
    ),
    ourRow(
      "breaker alone: success through a closed Bulwark breaker (consecutive window), call = Effect.sync(() => 1)",
      callNs,
      callCpu,
      callIns,
      stepsOf("bulwark-call", "bulwark-call-bare")
    ),
    ourRow(
      "not a breaker, Effect's floor: a failure frame alone (Effect.catchAllCause), call = Effect.sync(() => 1)",
      ns("floor-observe", "bulwark-call-bare"),
      cpuNs("floor-observe", "bulwark-call-bare"),
      ins("floor-observe", "bulwark-call-bare"),
      stepsOf("floor-observe", "bulwark-call-bare")
    ),
    ourRow(
      "not a breaker, Effect's floor: a decision when run, then a failure frame (Effect.suspend + Effect.catchAllCause), call = Effect.sync(() => 1)",
      ns("floor-decide-observe", "bulwark-call-bare"),
      cpuNs("floor-decide-observe", "bulwark-call-bare"),
      ins("floor-decide-observe", "bulwark-call-bare"),
      stepsOf("floor-decide-observe", "bulwark-call-bare")
    ),
    {
      scenario: "breaker alone: success through a closed cockatiel breaker (ConsecutiveBreaker), call = async () => 1",
      "overhead ns/call": cockatielNs.toFixed(0),
      "overhead CPU ns/call": cockatielCpu.toFixed(0),
      "instructions/call": cockatielIns === undefined ? "n/a" : cockatielIns.toFixed(0),
      "Effect runtime steps/call, bare → guarded": "n/a",
      "vs cockatiel (wall)": "1.00×",
      "vs cockatiel (CPU)": "1.00×",
      "vs cockatiel (instructions)": "1.00×"
    }
  ]
  const bare = yield* measure("no breaker", Effect.succeed(Array.from({ length: INSTANCES }, (): Execute => (self) => self)))
  const local = yield* measure(
    "in-process breaker per instance",
    Effect.forEach(Array.from({ length: INSTANCES }), () => Effect.map(Breaker.make("bench", options), (b): Execute => b.execute))
  )
  const memory = yield* measure(
    "shared, in-memory store",
    Effect.gen(function*() {
      const store = yield* Layer.build(BreakerStateStore.layerMemory)
      return yield* Effect.forEach(Array.from({ length: INSTANCES }), () =>
        Effect.map(Effect.provide(Breaker.makeShared("bench", options), store), (b): Execute => b.execute))
    })
  )
  const redis = yield* measure(
    "shared, Redis store (4 connections)",
    Effect.forEach(Array.from({ length: INSTANCES }), () =>
      Effect.gen(function*() {
        const store = yield* Layer.build(RedisStore.layer(connection, { prefix }))
        return yield* Effect.map(Effect.provide(Breaker.makeShared(`bench-${Date.now()}`, options), store), (b): Execute => b.execute)
      }))
  )
  const perCall = (rate: number) => 1e6 / rate
  const rows: Array<Record<string, string | number>> = [...perCallRows, ...[bare, local, memory, redis].map((m) => ({
    scenario: m.name,
    "calls/s": Math.round(m.rate),
    "spurious errors": `${m.errors} / ${m.calls}`,
    "overhead µs/call": m === bare ? "0" : (perCall(m.rate) - perCall(bare.rate)).toFixed(1)
  }))]
  writeResults("circuit-breaker", "Circuit breaker: per-call overhead against cockatiel; a shared breaker, 4 instances × concurrency 50 on one key", rows, [
    "Breaker alone rows: a success through a closed breaker that never trips, above each library's own bare call (Bulwark: `yield*` in one fiber of Effect.succeed, " +
      `${wall["bulwark-bare"].toFixed(0)} ns, or of Effect.sync, ${wall["bulwark-call-bare"].toFixed(0)} ns; cockatiel: \`await\` of an async function, ${wall["cockatiel-bare"].toFixed(0)} ns). ` +
      "`yield*` of Effect.succeed (a value) takes no run-loop step when bare, but the breaker must run it as a step inside its failure frame, so that row charges the breaker one step of the call's own; Effect.sync calls a function like cockatiel's async function does, and costs its step bare and guarded alike. " +
      "Wall: 15 interleaved rounds of 20,000 sequential calls after a warm-up of 3 loops of 20,000 per variant, median round. " +
      "CPU: the same rounds timed by the process's CPU time (process.cpuUsage), median round: it leaves out the time other work on the shared cores holds them, and counts V8's helper threads for either library alike. Results written before 2026-12-07 20:10 UTC read the main thread's /proc/thread-self/schedstat instead, which the kernel updates for a running thread only at a scheduler tick or a switch: over rounds of a few milliseconds it read whole 4 ms ticks (200 ns a call) or nothing, so their CPU column was noise. " +
      `Load average (1 min) ${loadBefore.toFixed(2)} before and ${loadAfterWall.toFixed(2)} after the wall rounds on 2 shared cores: wall figures move with the load.`,
    "Instructions/call: valgrind --tool=callgrind (node --single-threaded), each variant in a child of its own run for 1,000 and for 101,000 calls after the same warm-up as the wall rounds (3 loops of 20,000 calls), the difference divided by 100,000 (10,000 before 2026-12-07 20:15 UTC, when one-off compiling and collecting left counts off by hundreds of instructions a call), so start-up and warm-up cancel out; a count of executed instructions does not depend on the machine's load. " +
      "The warm-up must outlast V8's tier-up: results written before 2026-12-07 warmed up with one loop of 20,000 calls, and V8 then deoptimised and recompiled the Effect fiber runtime (about 140 ms of TurboFan on the main thread) inside the longer measured window only, which made Bulwark's bare call read 6,602 instructions and its overhead 0.58× cockatiel's while the wall time said 1.53×. " +
      "An instruction count still weighs every instruction alike: it does not see branch mispredictions, cache misses or the V8 helper threads, so it and the times can disagree.",
    `Goal: the breaker alone ≤ 1.0× cockatiel's per call. Measured ${(bulwarkNs / cockatielNs).toFixed(2)}× by wall time` +
      `, ${(bulwarkCpu / cockatielCpu).toFixed(2)}× by CPU` +
      (bulwarkIns === undefined ? "" : `, ${(bulwarkIns / cockatielIns!).toFixed(2)}× by instructions`) +
      ` (call = Effect.sync: ${(callNs / cockatielNs).toFixed(2)}×` +
      `, ${(callCpu / cockatielCpu).toFixed(2)}×` + (callIns === undefined ? ")." : `, ${(callIns / cockatielIns!).toFixed(2)}×).`),
    "The two floor rows are not breakers: the least any wrapper written with Effect's public API costs here, with no logic of its own. A breaker must decide when the call is run whether to make it (the breaker may have opened since the effect was built: a retried effect is run again) and must see the call's failure, so it cannot cost less than the second floor row, a suspended thunk and a failure frame: two run-loop steps. " +
      `Floors by wall time against cockatiel: ${(ns("floor-observe", "bulwark-call-bare") / cockatielNs).toFixed(2)}× (the frame alone) and ${(ns("floor-decide-observe", "bulwark-call-bare") / cockatielNs).toFixed(2)}× (decide, then the frame).`,
    "Effect runtime steps/call: run-loop iterations per call counted by a supervisor with op supervision on (10,000 calls), bare → guarded, with the op codes of the guarded call's steps.",
    `${INSTANCES} instances × concurrency ${CONCURRENCY}, ${CALLS_PER_INSTANCE} calls per instance per round, median calls/s of ${ROUNDS} rounds after a warm-up; each call waits 1 ms (the downstream).`,
    "Overhead µs/call = 1e6/rate − 1e6/rate without a breaker: the wall time each call adds at this concurrency, on 2 shared cores.",
    "A spurious error is any error at all: thresholds are out of reach, so the breaker must make every call and answer its result.",
    "Redis: the shared instance on 127.0.0.1:6379, one connection per breaker instance (as separate processes would have).",
    "Before the batched merge (per-call compare-and-set, two round trips per admission and two per outcome), the same run on this machine gave 168 calls/s on Redis with 12,739 / 30,000 spurious StoreError \"too many concurrent updates\" (issue #18 reported 100–200 calls/s and 39%)."
  ])
})

Effect.runPromise(main).then(
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
