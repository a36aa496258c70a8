/**
 * The Redis driver of {@link RateLimiterStore}: each reservation is one Lua script, atomic on the server,
 * reading the server's clock (`TIME`), so any number of processes on any hosts share one limit. A token
 * bucket is one string per key (its theoretical arrival time); a sliding window is one list per key (the
 * grant times less than a window old, and those reserved ahead). Keys expire once their state no longer matters.
 */
import { createHash } from "node:crypto"
import { Effect, Layer } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import { type Decision, type Rule, RateLimiterStore, RateLimiterStoreError } from "../RateLimiterStore.js"

/** Settings of the Redis store. */
export interface Options {
  /** Prepended to every key. Default `"bulwark:rate-limit:"`. */
  readonly prefix?: string
}

/**
 * Settings of the connection the layer opens: ioredis options, or a `url`. `commandTimeout` defaults to
 * 1 s so a Redis that stops answering fails a reservation with a typed error instead of holding it.
 * ioredis's `enableAutoPipelining` stays off by default: measured, it made sequential reservations slower
 * (a tick of delay before each write) and gained nothing at ten concurrent ones.
 */
export type Connection = RedisOptions & { readonly url?: string }

// ARGV: kind (1 token bucket, 2 sliding window), capacity|limit, interval|window (ms), permits, max wait (ms).
// Answers the server time (an integer: granted now, at that time; the common case, one integer to parse),
// {1, at, wait} (granted after a wait) or {0, retryAfter}; fractions as strings (Lua numbers would be
// truncated to integers). Times are whole server milliseconds; a token bucket's fractional interval keeps
// microseconds in `tat`.
const script = `
local kind = tonumber(ARGV[1])
local a = tonumber(ARGV[2])
local b = tonumber(ARGV[3])
local permits = tonumber(ARGV[4])
local maxWait = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if kind == 1 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  local nxt = math.max(tat, now) + permits * b
  local at = nxt - a * b
  local wait = math.max(0, at - now)
  if wait > maxWait then return {0, string.format('%.3f', wait)} end
  redis.call('SET', KEYS[1], string.format('%.3f', nxt), 'PX', math.ceil(nxt - now) + 1000)
  if wait == 0 then return now end
  return {1, string.format('%.3f', math.max(at, now)), string.format('%.3f', wait)}
end
while true do
  local first = redis.call('LINDEX', KEYS[1], 0)
  if not first or tonumber(first) > now - b then break end
  redis.call('LPOP', KEYS[1])
end
local len = redis.call('LLEN', KEYS[1])
local at = now
local bound = len - a + permits - 1
if bound >= 0 then at = math.max(at, tonumber(redis.call('LINDEX', KEYS[1], bound)) + b) end
if len > 0 then at = math.max(at, tonumber(redis.call('LINDEX', KEYS[1], -1))) end
local wait = at - now
if wait > maxWait then return {0, string.format('%.3f', wait)} end
for i = 1, permits do redis.call('RPUSH', KEYS[1], string.format('%d', at)) end
redis.call('PEXPIRE', KEYS[1], math.ceil(at + b - now) + 1000)
if wait == 0 then return now end
return {1, string.format('%d', at), string.format('%d', wait)}
`

// ARGV: kind, capacity|limit, interval|window (ms), permits, at. Gives back a reservation its waiter abandoned
// where safe (see internal/algorithm.ts): a token bucket's latest one, a sliding window's grants at `at`.
const releaseScript = `
local kind = tonumber(ARGV[1])
local a = tonumber(ARGV[2])
local b = tonumber(ARGV[3])
local permits = tonumber(ARGV[4])
local at = tonumber(ARGV[5])
if kind == 1 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or 'nil')
  if tat == nil or math.abs(tat - (at + a * b)) > math.min(0.01, b / 2) then return 0 end
  redis.call('SET', KEYS[1], string.format('%.3f', tat - permits * b), 'KEEPTTL')
  return 1
end
local removed = redis.call('LREM', KEYS[1], -permits, string.format('%d', at))
return removed
`

type Reply = number | Array<string | number>

const decode = (reply: Reply): Decision =>
  typeof reply === "number"
    ? { granted: true, at: reply, waitMillis: 0 }
    : Number(reply[0]) === 1
    ? { granted: true, at: Number(reply[1]), waitMillis: Number(reply[2]) }
    : { granted: false, retryAfterMillis: Number(reply[1]) }

const sha1 = (lua: string) => createHash("sha1").update(lua).digest("hex")
const reserveSha = sha1(script)
const releaseSha = sha1(releaseScript)

// The server has not got the script (never loaded on it, restarted, or SCRIPT FLUSH): the caller sends it whole once.
const noScript = (cause: unknown) => cause instanceof Error && cause.message.startsWith("NOSCRIPT")

/**
 * Runs a script by its digest (EVALSHA) and, only when the server answers NOSCRIPT, once more whole (EVAL,
 * which also caches it there), calling `ok` or `fail` directly: one promise reaction per call, where
 * ioredis's `defineCommand` adds a rejection handler and a wrapped command per call.
 */
const evaluate = (
  client: Redis,
  lua: string,
  sha: string,
  key: string,
  args: ReadonlyArray<string | number>,
  ok: (reply: unknown) => void,
  fail: (cause: unknown) => void
): void => {
  client.evalsha(sha, 1, key, ...args).then(ok, (cause) => {
    if (noScript(cause)) client.eval(lua, 1, key, ...args).then(ok, fail)
    else fail(cause)
  })
}

/** A store over an existing ioredis client (the caller owns its lifecycle). */
export const make = (client: Redis, options: Options = {}): RateLimiterStore["Type"] => {
  const prefix = options.prefix ?? "bulwark:rate-limit:"
  // A reservation sent while others wait for their replies on the connection is written together with the
  // ones sent in the same tick: the socket is corked until the tick ends, so ten concurrent reservations are
  // one write for the client and one read for the server instead of ten. One alone is written at once.
  let corked: Redis["stream"] | undefined
  const uncork = () => {
    const stream = corked
    corked = undefined
    stream?.uncork()
  }
  const coalesce = () => {
    if (corked !== undefined || client.commandQueue.length === 0 || client.status !== "ready") return
    corked = client.stream
    corked.cork()
    process.nextTick(uncork)
  }
  const ruleArgs = (rule: Rule): [number, number, number] =>
    rule.kind === "tokenBucket" ? [1, rule.capacity, rule.intervalMillis] : [2, rule.limit, rule.windowMillis]
  return RateLimiterStore.of({
    // One EVALSHA per reservation, its reply decoded in the reply's callback, which resumes the fiber: a
    // reservation is one suspension of the calling fiber and one round trip.
    reserve: (key, rule, permits, maxWaitMillis) =>
      Effect.async<Decision, RateLimiterStoreError>((resume) => {
        const [kind, a, b] = ruleArgs(rule)
        coalesce()
        evaluate(
          client,
          script,
          reserveSha,
          prefix + key,
          [kind, a, b, permits, maxWaitMillis],
          (reply) => resume(Effect.succeed(decode(reply as Reply))),
          (cause) => resume(Effect.fail(new RateLimiterStoreError({ operation: "reserve", key, cause })))
        )
      }),
    release: (key, rule, permits, at) =>
      Effect.async<void, RateLimiterStoreError>((resume) => {
        const [kind, a, b] = ruleArgs(rule)
        coalesce()
        evaluate(
          client,
          releaseScript,
          releaseSha,
          prefix + key,
          [kind, a, b, permits, at],
          () => resume(Effect.void),
          (cause) => resume(Effect.fail(new RateLimiterStoreError({ operation: "release", key, cause })))
        )
      })
  })
}

/** The Redis store as a layer, with its own connection (closed when the layer is released). */
export const layer = (
  connection: Connection,
  options: Options = {}
): Layer.Layer<RateLimiterStore, RateLimiterStoreError> =>
  Layer.scoped(
    RateLimiterStore,
    Effect.map(
      Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const { url, ...rest } = connection
            const settings = { commandTimeout: 1_000, ...rest, lazyConnect: true }
            const client = url === undefined ? new Redis(settings) : new Redis(url, settings)
            // Connection errors reach callers as typed errors of the reservations they break; without a
            // listener ioredis would also print each one as an unhandled event.
            client.on("error", () => undefined)
            await client.connect()
            return client
          },
          catch: (cause) => new RateLimiterStoreError({ operation: "connect", key: "*", cause })
        }),
        (client) => Effect.promise(() => client.quit().catch(() => "closed"))
      ),
      (client) => make(client, options)
    )
  )
