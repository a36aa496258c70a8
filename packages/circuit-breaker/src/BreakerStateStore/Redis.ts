/**
 * The Redis driver of {@link BreakerStateStore}: one hash per key (`v` version, `s` snapshot JSON), updated
 * by optimistic compare-and-set in a Lua script, so any number of processes share one breaker atomically.
 * Keys expire after `ttl` without updates so abandoned breakers do not accumulate.
 */
import { Duration, Effect, Layer, Schedule } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import { BreakerStateStore, StoreError } from "../BreakerStateStore.js"
import type { Snapshot } from "../internal/machine.js"

/** Settings of the Redis store. */
export interface Options {
  /** Prepended to every key. Default `"bulwark:breaker:"`. */
  readonly prefix?: string
  /** Idle time after which a key's state is forgotten. Default 1 day. */
  readonly ttl?: Duration.DurationInput
  /** Compare-and-set attempts under contention before giving up with a `StoreError`. Default 50. */
  readonly maxConflicts?: number
}

/**
 * Settings of the connection the layer opens: ioredis options, or a `url`. `commandTimeout` defaults to
 * 1 s so a Redis that stops answering fails a command instead of holding it (a shared breaker then judges
 * locally until Redis answers again).
 */
export type Connection = RedisOptions & { readonly url?: string }

// Commits ARGV[2] only if the stored version is still ARGV[1] (0 when the key is absent).
const compareAndSet = `
local current = redis.call('HGET', KEYS[1], 'v')
if (current or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[3], 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`

class Conflict {
  readonly _tag = "Conflict"
}

/** A store over an existing ioredis client (the caller owns its lifecycle). */
export const make = (client: Redis, options: Options = {}): BreakerStateStore["Type"] => {
  const prefix = options.prefix ?? "bulwark:breaker:"
  const ttl = String(Duration.toMillis(options.ttl ?? "1 day"))
  const maxConflicts = options.maxConflicts ?? 50
  const read = (key: string) =>
    Effect.tryPromise({
      try: () => client.hmget(prefix + key, "v", "s"),
      catch: (cause) => new StoreError({ operation: "read", key, cause })
    })
  const parse = (key: string, json: string) =>
    Effect.try({
      try: () => JSON.parse(json) as Snapshot,
      catch: (cause) => new StoreError({ operation: "decode", key, cause })
    })
  return BreakerStateStore.of({
    get: (key) =>
      Effect.flatMap(read(key), ([, json]) => json == null ? Effect.succeed(undefined) : parse(key, json)),
    modify: (key, initial, f) =>
      Effect.gen(function*() {
        const [version, json] = yield* read(key)
        const snapshot = json == null ? initial() : yield* parse(key, json)
        const answer = f(snapshot)
        const expected = version ?? "0"
        const next = String(Number(expected) + 1)
        const committed = yield* Effect.tryPromise({
          try: () => client.eval(compareAndSet, 1, prefix + key, expected, JSON.stringify(snapshot), next, ttl),
          catch: (cause) => new StoreError({ operation: "write", key, cause })
        })
        if (committed !== 1) return yield* Effect.fail(new Conflict())
        return answer
      }).pipe(
        Effect.retry({ while: (e) => e instanceof Conflict, schedule: Schedule.recurs(maxConflicts - 1) }),
        Effect.catchIf((e): e is Conflict => e instanceof Conflict, () =>
          Effect.fail(new StoreError({ operation: "modify", key, cause: "too many concurrent updates" })))
      )
  })
}

/** The Redis store as a layer, with its own connection (closed when the layer is released). */
export const layer = (
  connection: Connection,
  options: Options = {}
): Layer.Layer<BreakerStateStore, StoreError> =>
  Layer.scoped(
    BreakerStateStore,
    Effect.map(
      Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const { url, ...rest } = connection
            const settings = { commandTimeout: 1_000, ...rest, lazyConnect: true }
            const client = url === undefined ? new Redis(settings) : new Redis(url, settings)
            // Connection errors reach callers as StoreErrors of the commands they break; without a
            // listener ioredis would also print each one as an unhandled event.
            client.on("error", () => undefined)
            await client.connect()
            return client
          },
          catch: (cause) => new StoreError({ operation: "connect", key: "*", cause })
        }),
        (client) => Effect.promise(() => client.quit().catch(() => "closed"))
      ),
      (client) => make(client, options)
    )
  )
