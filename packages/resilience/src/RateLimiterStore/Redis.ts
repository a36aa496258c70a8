/**
 * The Redis driver of {@link RateLimiterStore}: each reservation is one Lua script, atomic on the server,
 * reading the server's clock (`TIME`), so any number of processes on any hosts share one limit. A token
 * bucket is one string per key (its theoretical arrival time); a sliding window is one list per key (the
 * grant times less than a window old, and those reserved ahead). Keys expire once their state no longer matters.
 */
import { createHash } from "node:crypto"
import { Duration, Effect, Layer } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import { type Decision, RateLimiterStore, RateLimiterStoreError } from "../RateLimiterStore.js"

/** Settings of the Redis store. */
export interface Options {
  /** Prepended to every key. Default `"bulwark:rate-limit:"`. */
  readonly prefix?: string
  /**
   * How long a reservation or release waits for the server's reply before failing with
   * `RateLimiterStoreError` (a server that stopped answering, a connection that is gone). Default 1 s;
   * enforced within a quarter of it.
   */
  readonly timeout?: Duration.DurationInput
}

/**
 * Settings of the connection the layer opens: ioredis options, or a `url`. The store bounds each reply's
 * wait itself (`Options.timeout`), with one timer for all calls in flight, where ioredis's `commandTimeout`
 * arms and clears a timer per command. ioredis's `enableAutoPipelining` stays off by default: it builds a
 * pipeline per tick, which made sequential reservations slower; the store writes concurrent reservations
 * together itself.
 */
export type Connection = RedisOptions & { readonly url?: string }

// ARGV: kind (1 token bucket, 2 sliding window), capacity|limit, interval|window (ms), permits, max wait (ms).
// Answers the server time (an integer: granted now, at that time; the common case, one integer to parse),
// {1, at, wait} (granted after a wait) or {0, retryAfter}; fractions as strings (Lua numbers would be
// truncated to integers). Times are whole server milliseconds; a token bucket's fractional interval keeps
// `tat` whole: a number passed to redis.call is written with 17 significant digits (exact), which also
// spares a string.format per call.
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
  redis.call('SET', KEYS[1], nxt, 'PX', math.ceil(nxt - now) + 1000)
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
for i = 1, permits do redis.call('RPUSH', KEYS[1], at) end
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

interface Call {
  /** The watchdog's tick when the call was sent. */
  readonly tick: number
  /** Answered, failed or timed out: whatever comes later is ignored. */
  settled: boolean
  readonly fail: (cause: unknown) => void
}

const reserved = (reply: unknown) => Effect.succeed(decode(reply as Reply))
const released = () => Effect.void

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
  // Calls waiting for a reply, oldest first, each stamped with the watchdog's tick when it was sent. One
  // interval timer, running only while calls are in flight, fails those older than the timeout: cheaper
  // than a timer per call, and a connection that is lost or a server that hangs still ends them.
  const timeoutMillis = Duration.toMillis(options.timeout ?? "1 second")
  let tick = 0
  let inFlight: Array<Call> = []
  let watchdog: ReturnType<typeof setInterval> | undefined
  const watch = () => {
    tick++
    const kept: Array<Call> = []
    for (const call of inFlight) {
      if (call.settled) continue
      // Sent at least four whole quarters of the timeout ago.
      if (tick - call.tick > 4) call.fail(new Error(`no reply from Redis within ${timeoutMillis} ms`))
      else kept.push(call)
    }
    inFlight = kept
    if (kept.length === 0) {
      clearInterval(watchdog)
      watchdog = undefined
    }
  }
  const run = <A>(
    operation: string,
    key: string,
    lua: string,
    sha: string,
    args: ReadonlyArray<string | number>,
    answer: (reply: unknown) => Effect.Effect<A>
  ) =>
    Effect.async<A, RateLimiterStoreError>((resume) => {
      const call: Call = {
        tick,
        settled: false,
        fail: (cause) => {
          if (call.settled) return
          call.settled = true
          resume(Effect.fail(new RateLimiterStoreError({ operation, key, cause })))
        }
      }
      inFlight.push(call)
      if (watchdog === undefined) {
        watchdog = setInterval(watch, timeoutMillis / 4)
        // The watchdog alone must not keep a process alive.
        watchdog.unref()
      }
      coalesce()
      evaluate(client, lua, sha, prefix + key, args, (reply) => {
        if (call.settled) return
        call.settled = true
        resume(answer(reply))
      }, call.fail)
    })
  return RateLimiterStore.of({
    // One EVALSHA per reservation, its reply decoded in the reply's callback, which resumes the fiber: a
    // reservation is one suspension of the calling fiber and one round trip.
    reserve: (key, rule, permits, maxWaitMillis) =>
      rule.kind === "tokenBucket"
        ? run("reserve", key, script, reserveSha, [1, rule.capacity, rule.intervalMillis, permits, maxWaitMillis], reserved)
        : run("reserve", key, script, reserveSha, [2, rule.limit, rule.windowMillis, permits, maxWaitMillis], reserved),
    release: (key, rule, permits, at) =>
      rule.kind === "tokenBucket"
        ? run("release", key, releaseScript, releaseSha, [1, rule.capacity, rule.intervalMillis, permits, at], released)
        : run("release", key, releaseScript, releaseSha, [2, rule.limit, rule.windowMillis, permits, at], released)
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
            const settings = { ...rest, lazyConnect: true }
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
