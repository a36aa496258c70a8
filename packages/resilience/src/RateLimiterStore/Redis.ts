/**
 * The Redis driver of {@link RateLimiterStore}: each reservation is one Lua script, atomic on the server,
 * reading the server's clock (`TIME`, or a key's expiry), so any number of processes on any hosts share one
 * limit; Redis 6.2 or later (`SET ... PXAT`). A token bucket is one string per key (its theoretical arrival
 * time); a sliding window is one list per key (the grant times, those reserved ahead included). Keys expire
 * once their state no longer matters.
 */
import { createHash } from "node:crypto"
import { Duration, Effect, Layer } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import { type Decision, RateLimiterStore, RateLimiterStoreError, type Rule } from "../RateLimiterStore.js"

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

// The reservation scripts are written per rule, its constants in the text (Lua reads them once, when the
// server loads the script): each argument a call sends costs the server a string object, a Lua string and
// a conversion to a number, about as much as one of the script's Redis calls. ARGV: the longest wait (ms),
// then the permits when more than one. Answers the server time (an integer: granted now, at that time; the
// common case, one integer to parse), {1, at, wait} (granted after a wait) or {0, retryAfter}; fractions as
// strings (Lua numbers would be truncated to integers). Times are whole server milliseconds. A number passed
// to redis.call is written with 17 significant digits (exact), through snprintf on Redis 7.0: constant
// arguments are written as strings.
//
// Token bucket: the key holds `tat` and expires at grid(tat), the end of the second after the one `tat`
// falls in (its state stops mattering at `tat`). That expiry is the clock: now = grid(tat) − PTTL (PTTL
// counts on the server's clock in whole milliseconds, as TIME read to the millisecond does), so a
// reservation on a live key reads no TIME; and the expiry moves only when `tat` enters another second, so
// the value is mostly written with KEEPTTL (an expiry set is rewritten for replication, and costs as much
// as the write). Every write of the key keeps that expiry (here and in the release script); a key without
// it (PTTL not positive) reads TIME. The grid depends on the value alone, not on the rule, so instances
// configured with different rules for one key still read one clock.
const grid = (x: string) => `(math.floor(${x} / 1000) + 2) * 1000`
// A number as a Lua literal: JavaScript's shortest form that reads back as the same double.
const literal = (x: number) => String(x)

const tokenBucketScript = (intervalMillis: number, capacity: number) => `
local k = KEYS[1]
local tat = redis.call('GET', k)
local now, exp
if tat then
  tat = tat + 0
  exp = ${grid("tat")}
  local ttl = redis.call('PTTL', k)
  if ttl > 0 then now = exp - ttl else exp = nil end
else
  tat = 0
end
if not exp then
  local t = redis.call('TIME')
  now = t[1] * 1000 + math.floor(t[2] / 1000)
end
local inc = ${literal(intervalMillis)}
if ARGV[2] then inc = ARGV[2] * inc end
local nxt = math.max(tat, now) + inc
local at = nxt - ${literal(capacity * intervalMillis)}
if at > now and at - now > ARGV[1] + 0 then return {0, string.format('%.3f', at - now)} end
local nexp = ${grid("nxt")}
if nexp == exp then redis.call('SET', k, nxt, 'KEEPTTL') else redis.call('SET', k, nxt, 'PXAT', nexp) end
if at > now then return {1, string.format('%.3f', at), string.format('%.3f', at - now)} end
return now
`

// Sliding window: a list of grant times, ascending. A new grant is no earlier than the last one and at least
// a window after the one `limit - permits` places before the last (read from the tail, so grants a window
// old at the head, which constrain nothing, need not be dropped first). Those old grants are dropped in
// batches, when the list's length passes a multiple of 32: the work is proportional to the grants made. The
// key's expiry is pushed out only when it would come before the state stops mattering (the last grant plus
// a window), to a whole second a second later. Grant times are whole milliseconds, pushed as strings made
// with '%d' (integer formatting, cheaper than the number conversion redis.call would apply).
const slidingWindowScript = (limit: number, windowMillis: number) => `
local k = KEYS[1]
local permits = 1
if ARGV[2] then permits = ARGV[2] + 0 end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local at = now
local last = redis.call('LINDEX', k, '-1')
if last then
  last = last + 0
  if last > at then at = last end
  local index = '-${limit}'
  if ARGV[2] then index = permits - ${literal(limit + 1)} end
  local bound = redis.call('LINDEX', k, index)
  if bound then
    bound = bound + ${literal(windowMillis)}
    if bound > at then at = bound end
  end
end
local wait = at - now
if wait > ARGV[1] + 0 then return {0, string.format('%.3f', wait)} end
local len
local grant = string.format('%d', at)
if permits == 1 then len = redis.call('RPUSH', k, grant)
else
  local grants = {}
  for i = 1, permits do grants[i] = grant end
  len = redis.call('RPUSH', k, unpack(grants))
end
if len > 32 and math.floor(len / 32) ~= math.floor((len - permits) / 32) then
  local old = now - ${literal(windowMillis)}
  while true do
    local head = redis.call('LRANGE', k, '0', '31')
    local n = 0
    for i = 1, #head do
      if head[i] + 0 > old then break end
      n = i
    end
    if n > 0 then redis.call('LTRIM', k, n, -1) end
    if n < 32 then break end
  end
end
local horizon = at + ${literal(windowMillis)}
if not last or redis.call('PTTL', k) < horizon - now then redis.call('PEXPIREAT', k, ${grid("horizon")}) end
if wait == 0 then return now end
return {1, string.format('%d', at), string.format('%d', wait)}
`

// ARGV: kind, capacity|limit, interval|window (ms), permits, at. Gives back a reservation its waiter abandoned
// where safe (see internal/algorithm.ts): a token bucket's latest one (keeping the key's expiry at the grid
// of its value: it is the reservation script's clock), a sliding window's grants at `at`.
const releaseScript = `
local kind = tonumber(ARGV[1])
local a = tonumber(ARGV[2])
local b = tonumber(ARGV[3])
local permits = tonumber(ARGV[4])
local at = tonumber(ARGV[5])
if kind == 1 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or 'nil')
  if tat == nil or math.abs(tat - (at + a * b)) > math.min(0.01, b / 2) then return 0 end
  local v = tat - permits * b
  local exp = ${grid("v")}
  if exp == ${grid("tat")} then redis.call('SET', KEYS[1], v, 'KEEPTTL') else redis.call('SET', KEYS[1], v, 'PXAT', exp) end
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
const releaseSha = sha1(releaseScript)

interface Script {
  readonly lua: string
  readonly sha: string
}
// A limiter resolves its rule once and passes the same object with every reservation.
const scripts = new WeakMap<Rule, Script>()
const scriptOf = (rule: Rule): Script => {
  let script = scripts.get(rule)
  if (script === undefined) {
    const lua = rule.kind === "tokenBucket"
      ? tokenBucketScript(rule.intervalMillis, rule.capacity)
      : slidingWindowScript(rule.limit, rule.windowMillis)
    script = { lua, sha: sha1(lua) }
    scripts.set(rule, script)
  }
  return script
}

// The server has not got the script (never loaded on it, restarted, or SCRIPT FLUSH): the caller sends it whole once.
const noScript = (cause: unknown) => cause instanceof Error && cause.message.startsWith("NOSCRIPT")

/**
 * A call waiting for its reply, linked into the store's list of calls in flight (oldest first) until it
 * settles: answered, failed or timed out, whichever comes first; whatever comes later is ignored.
 */
interface Call {
  /** The watchdog's tick when the call was sent. */
  readonly tick: number
  prev: Call | undefined
  next: Call | undefined
  settled: boolean
  readonly operation: string
  readonly key: string
  readonly resume: (effect: Effect.Effect<any, RateLimiterStoreError>) => void
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
  // than a timer per call, and a connection that is lost or a server that hangs still ends them. A call
  // leaves the list as it settles: kept until the next tick, it would outlive the young generation of the
  // heap (a quarter second holds thousands of calls), be copied and promoted with its fiber's
  // continuation, and wait for a full collection.
  const timeoutMillis = Duration.toMillis(options.timeout ?? "1 second")
  let tick = 0
  let oldest: Call | undefined
  let newest: Call | undefined
  let watchdog: ReturnType<typeof setInterval> | undefined
  const settle = (call: Call): boolean => {
    if (call.settled) return false
    call.settled = true
    const { next, prev } = call
    if (prev === undefined) oldest = next
    else prev.next = next
    if (next === undefined) newest = prev
    else next.prev = prev
    call.prev = call.next = undefined
    return true
  }
  const fail = (call: Call, cause: unknown) => {
    if (settle(call)) call.resume(Effect.fail(new RateLimiterStoreError({ operation: call.operation, key: call.key, cause })))
  }
  const watch = () => {
    tick++
    // Linked in the order they were sent, so their ticks ascend: the old ones lead the list. Sent at
    // least four whole quarters of the timeout ago.
    while (oldest !== undefined && tick - oldest.tick > 4) {
      fail(oldest, new Error(`no reply from Redis within ${timeoutMillis} ms`))
    }
    if (oldest === undefined) {
      clearInterval(watchdog)
      watchdog = undefined
    }
  }
  // Runs a script by its digest (EVALSHA) and, only when the server answers NOSCRIPT, once more whole
  // (EVAL, which also caches it there), settling the call in the reply's reaction: one promise reaction
  // per call, where ioredis's `defineCommand` adds a rejection handler and a wrapped command per call.
  // The stored key and the arguments (strings, which ioredis writes as they are) are made when the effect
  // is made, not each time it runs: a limiter's `withPermit(effect)` is often made once and run many times.
  const run = <A>(
    operation: string,
    key: string,
    lua: string,
    sha: string,
    args: ReadonlyArray<string>,
    answer: (reply: unknown) => Effect.Effect<A>
  ) => {
    const stored = prefix + key
    return Effect.async<A, RateLimiterStoreError>((resume) => {
      const call: Call = { tick, prev: newest, next: undefined, settled: false, operation, key, resume }
      if (newest === undefined) oldest = call
      else newest.next = call
      newest = call
      if (watchdog === undefined) {
        watchdog = setInterval(watch, timeoutMillis / 4)
        // The watchdog alone must not keep a process alive.
        watchdog.unref()
      }
      coalesce()
      const ok = (reply: unknown) => {
        if (settle(call)) resume(answer(reply))
      }
      client.evalsha(sha, "1", stored, ...args).then(ok, (cause) => {
        if (noScript(cause)) client.eval(lua, "1", stored, ...args).then(ok, (cause) => fail(call, cause))
        else fail(call, cause)
      })
    })
  }
  return RateLimiterStore.of({
    // One EVALSHA per reservation, its reply decoded in the reply's callback, which resumes the fiber: a
    // reservation is one suspension of the calling fiber and one round trip.
    reserve: (key, rule, permits, maxWaitMillis) => {
      const { lua, sha } = scriptOf(rule)
      const wait = String(maxWaitMillis)
      return run("reserve", key, lua, sha, permits === 1 ? [wait] : [wait, String(permits)], reserved)
    },
    release: (key, rule, permits, at) =>
      rule.kind === "tokenBucket"
        ? run("release", key, releaseScript, releaseSha, ["1", String(rule.capacity), String(rule.intervalMillis), String(permits), String(at)], released)
        : run("release", key, releaseScript, releaseSha, ["2", String(rule.limit), String(rule.windowMillis), String(permits), String(at)], released)
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
