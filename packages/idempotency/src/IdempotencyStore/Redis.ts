/**
 * The Redis idempotency store. Each key is one hash (`token`, `state`, `lease`, `retention`, `outcome`)
 * changed only by Lua scripts, so a claim is atomic on the server. Time is the **Redis server's** clock
 * (`TIME`), and eviction is Redis's own: every write sets `PEXPIRE` to lease + retention (claim) or
 * retention (complete), so nothing needs sweeping.
 */
import { Config, Duration, Effect, Layer, Redacted } from "effect"
import { Redis } from "ioredis"
import * as Store from "../IdempotencyStore.js"

/** Settings of the Redis store. */
export interface Options {
  /** Prefix of every key this store writes. Default `bulwark:idem:`. */
  readonly prefix?: string
}

const nowScript = `local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`

// KEYS[1] key; ARGV lease ms, retention ms. Answers {state, a, b}.
const claimScript = `${nowScript}
local h = redis.call('HMGET', KEYS[1], 'state', 'token', 'lease', 'outcome')
if h[1] == 'completed' then return {'completed', h[4] or 'null', ''} end
if h[1] == 'in_progress' and tonumber(h[3]) > now then return {'in_progress', h[3], tostring(now)} end
local token = now
if h[2] then token = math.max(tonumber(h[2]) + 1, now) end
local lease = tonumber(ARGV[1]); local retention = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'in_progress', 'token', string.format('%d', token),
  'lease', string.format('%d', now + lease), 'retention', ARGV[2])
redis.call('HDEL', KEYS[1], 'outcome')
redis.call('PEXPIRE', KEYS[1], lease + retention)
return {'fresh', string.format('%d', token), string.format('%d', now + lease)}`

// KEYS[1] key; ARGV token, outcome JSON. Answers 1 when owned.
const completeScript = `local h = redis.call('HMGET', KEYS[1], 'state', 'token', 'retention')
if h[1] ~= 'in_progress' or h[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'completed', 'outcome', ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(h[3]))
return 1`

// KEYS[1] key; ARGV token. Ends the lease but keeps the token so the next owner's is larger.
const releaseScript = `${nowScript}
local h = redis.call('HMGET', KEYS[1], 'state', 'token')
if h[1] ~= 'in_progress' or h[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease', string.format('%d', now))
return 1`

interface Scripts {
  bulwarkIdemClaim(key: string, lease: number, retention: number): Promise<Array<string>>
  bulwarkIdemComplete(key: string, token: string, outcome: string): Promise<number>
  bulwarkIdemRelease(key: string, token: string): Promise<number>
}

// defineCommand sends EVALSHA and falls back to EVAL once per connection when the script is not cached.
const withScripts = (client: Redis): Redis & Scripts => {
  if (typeof (client as Partial<Scripts>).bulwarkIdemClaim !== "function") {
    client.defineCommand("bulwarkIdemClaim", { numberOfKeys: 1, lua: claimScript })
    client.defineCommand("bulwarkIdemComplete", { numberOfKeys: 1, lua: completeScript })
    client.defineCommand("bulwarkIdemRelease", { numberOfKeys: 1, lua: releaseScript })
  }
  return client as Redis & Scripts
}

/** Creates the store over an ioredis client (which the caller owns). */
export const make = (redis: Redis, options: Options = {}): Store.Service => {
  const prefix = options.prefix ?? "bulwark:idem:"
  const client = withScripts(redis)
  const call = <A>(operation: "claim" | "complete" | "release", key: string, run: () => Promise<A>) =>
    Effect.tryPromise({ try: run, catch: (cause) => new Store.IdempotencyStoreError({ operation, key, cause }) })
  const owned = (key: string, token: number) => (answer: unknown) =>
    Number(answer) === 1 ? Effect.void : Effect.fail(new Store.LeaseLostError({ key, token }))
  return {
    claim: (key, claimOptions) => {
      const lease = Math.max(1, Math.round(Duration.toMillis(Duration.decode(claimOptions.lease))))
      const retention = Math.max(1, Math.round(Duration.toMillis(Duration.decode(claimOptions.retention ?? Store.defaultRetention))))
      return call("claim", key, () => client.bulwarkIdemClaim(prefix + key, lease, retention)).pipe(
        Effect.flatMap(([state, a, b]) => {
          switch (state) {
            case "fresh":
              return Effect.succeed(Store.fresh(Number(a), Number(b)))
            case "in_progress":
              return Effect.succeed(Store.inProgress(Number(a), Number(b)))
            case "completed":
              return Effect.try({
                try: () => Store.completed(JSON.parse(a!)),
                catch: (cause) => new Store.IdempotencyStoreError({ operation: "claim", key, cause })
              })
            default:
              return Effect.fail(new Store.IdempotencyStoreError({ operation: "claim", key, cause: `unexpected answer ${state}` }))
          }
        })
      )
    },
    complete: (key, token, outcome) =>
      Effect.flatMap(Store.encodeOutcome(key, outcome), (json) =>
        call("complete", key, () => client.bulwarkIdemComplete(prefix + key, String(token), json)).pipe(
          Effect.flatMap(owned(key, token))
        )),
    release: (key, token) =>
      call("release", key, () => client.bulwarkIdemRelease(prefix + key, String(token))).pipe(
        Effect.flatMap(owned(key, token))
      ),
    // Redis evicts by PEXPIRE on its own.
    purgeExpired: Effect.succeed(0)
  }
}

/** Provides the Redis store as the `IdempotencyStore`, owning a connection to `url` for the layer's lifetime. */
export const layer = (options: Options & { readonly url: string }): Layer.Layer<Store.IdempotencyStore> =>
  Layer.scoped(
    Store.IdempotencyStore,
    Effect.map(
      Effect.acquireRelease(
        Effect.sync(() => new Redis(options.url, { lazyConnect: false, maxRetriesPerRequest: 2 })),
        (client) => Effect.promise(() => client.quit().catch(() => client.disconnect()))
      ),
      (client) => make(client, options)
    )
  )

/** The Redis store at `BULWARK_REDIS_URL` (default `redis://127.0.0.1:6379`). */
export const layerConfig: Layer.Layer<Store.IdempotencyStore, import("effect/ConfigError").ConfigError> =
  Layer.unwrapEffect(
    Effect.map(
      Config.withDefault(Config.redacted("BULWARK_REDIS_URL"), Redacted.make("redis://127.0.0.1:6379")),
      (url) => layer({ url: Redacted.value(url) })
    )
  )
