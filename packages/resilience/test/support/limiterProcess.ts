/**
 * One of several processes sharing a limit (started by `multiProcess`): reports "ready", reads the start
 * time from stdin, then acquires permits with `fibers` fibers until the end, and prints the grant times the
 * store decided (its own clock) and the times the calls actually started (this process's clock) as JSON.
 */
import { Database } from "@bulwark/sql"
import { Effect, Layer } from "effect"
import { createInterface } from "node:readline"
import * as RateLimiter from "../../src/RateLimiter.js"
import { RateLimiterStore } from "../../src/RateLimiterStore.js"
import * as RedisStore from "../../src/RateLimiterStore/Redis.js"
import * as SqlStore from "../../src/RateLimiterStore/Sql.js"

export interface Args {
  readonly driver: "redis" | "postgres"
  readonly url: string
  readonly namespace: string
  readonly name: string
  readonly limit: number
  readonly windowMillis: number
  readonly durationMillis: number
  readonly fibers: number
}

const args = JSON.parse(process.argv[2]!) as Args

const base: Layer.Layer<RateLimiterStore, unknown> = args.driver === "redis"
  ? RedisStore.layer({ url: args.url }, { prefix: args.namespace })
  : SqlStore.layer({ table: args.namespace }).pipe(Layer.provide(Database.layerPostgres({ url: args.url })))

const grants: Array<number> = []
// Records what the store granted, on the way through to the limiter.
const recording = Layer.effect(
  RateLimiterStore,
  Effect.map(RateLimiterStore, (store) =>
    RateLimiterStore.of({
      reserve: (key, rule, permits, maxWait) =>
        Effect.tap(store.reserve(key, rule, permits, maxWait), (d) => {
          if (d.granted) grants.push(d.at)
        }),
      release: store.release
    }))
).pipe(Layer.provide(base))

const startAt = () =>
  new Promise<number>((resolve) => {
    const lines = createInterface({ input: process.stdin })
    lines.once("line", (line) => {
      lines.close()
      resolve(Number(line))
    })
  })

const program = Effect.gen(function*() {
  const limiter = yield* RateLimiter.make(args.name, {
    limit: { kind: "slidingWindow", limit: args.limit, window: args.windowMillis }
  })
  // Connected and migrated: only now does the clock start.
  process.stdout.write("ready\n")
  const start = yield* Effect.promise(startAt)
  yield* Effect.sleep(Math.max(0, start - Date.now()))
  const end = start + args.durationMillis
  const calls: Array<number> = []
  yield* Effect.forEach(Array.from({ length: args.fibers }), () =>
    Effect.whileLoop({
      while: () => Date.now() < end,
      body: () => Effect.zipRight(limiter.acquire("partner"), Effect.sync(() => calls.push(Date.now()))),
      step: () => undefined
    }), { concurrency: "unbounded", discard: true })
  process.stdout.write(JSON.stringify({ grants, calls }) + "\n")
})

Effect.runPromise(Effect.provide(program, recording)).then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(String(error) + "\n")
    process.exit(1)
  }
)
