/**
 * Lua scripts for the settle operations whose steps must not be separated by a crash: a copy written
 * without the original's XACK is a duplicate, an XACK without the copy is a loss.
 */
import { createHash } from "node:crypto"

/** A script and its SHA1, for EVALSHA with an EVAL fallback. */
export interface Script {
  readonly lua: string
  readonly sha: string
  readonly keys: number
}

const script = (keys: number, lua: string): Script => ({
  lua,
  keys,
  sha: createHash("sha1").update(lua).digest("hex")
})

// `maxLength` "0" means no trimming; otherwise approximate MAXLEN, as on publish.
const xadd = `
local function xadd(key, maxLength, fields)
  if maxLength ~= '0' then
    return redis.call('XADD', key, 'MAXLEN', '~', maxLength, '*', unpack(fields))
  end
  return redis.call('XADD', key, '*', unpack(fields))
end
`

// The receipt is valid only while this consumer still holds this very delivery (same delivery count):
// after XAUTOCLAIM gave the entry to someone else, settling it here would duplicate or lose it.
const holds = `
local function holds(stream, group, consumer, entry, deliveries)
  local pending = redis.call('XPENDING', stream, group, entry, entry, 1, consumer)
  return #pending > 0 and tonumber(pending[1][4]) == tonumber(deliveries)
end
`

const now = `
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

/**
 * nack: KEYS stream, delayed set; ARGV group, consumer, entry, deliveries, delayMillis, maxLength, fields...
 * Re-adds a copy now (no delay) or parks it in the group's delayed set until due, then XACKs the original.
 * Answers 1, or 0 for a stale receipt.
 */
export const nack = script(2, `${xadd}${holds}${now}
if not holds(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local delay = tonumber(ARGV[5])
if delay > 0 then
  -- The original entry id keeps the member unique; the mover drops it again.
  table.insert(fields, 1, ARGV[3])
  redis.call('ZADD', KEYS[2], string.format('%.0f', now() + delay), cmsgpack.pack(fields))
else
  xadd(KEYS[1], ARGV[6], fields)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
`)

/**
 * deadLetter: KEYS stream, dead-letter stream; ARGV group, consumer, entry, deliveries, maxLength, fields...
 * Writes the copy to the dead-letter stream and XACKs the original. Answers 1, or 0 for a stale receipt.
 */
export const deadLetter = script(2, `${xadd}${holds}
if not holds(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
xadd(KEYS[2], ARGV[5], fields)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
`)

/**
 * move: KEYS delayed set, stream; ARGV limit, maxLength.
 * Re-adds due entries to the stream and removes them from the set in one step.
 * Answers { moved, millis until the next one is due or -1 }.
 */
export const move = script(2, `${xadd}${now}
local at = now()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', at), 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local fields = cmsgpack.unpack(member)
  table.remove(fields, 1)
  xadd(KEYS[2], ARGV[2], fields)
  redis.call('ZREM', KEYS[1], member)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if #first > 0 then wait = math.max(0, tonumber(first[2]) - at) end
return { #due, wait }
`)

/**
 * claim: KEYS stream; ARGV group, consumer, minIdleMillis, cursor, count.
 * XAUTOCLAIM plus each claimed entry's delivery count (XAUTOCLAIM increments it but does not return it).
 * Answers { next cursor, entries, delivery counts, number of entries deleted while pending }.
 */
export const claim = script(1, `
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local entries = {}
local counts = {}
for _, entry in ipairs(r[2]) do
  if entry and entry[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    entries[#entries + 1] = entry
    counts[#counts + 1] = (p[1] and tonumber(p[1][4])) or 1
  end
end
local deleted = 0
if r[3] then deleted = #r[3] end
return { r[1], entries, counts, deleted }
`)

/**
 * releaseConsumer: KEYS stream; ARGV group, consumer.
 * Deletes the consumer only when it holds nothing: DELCONSUMER drops its pending entries, which would lose them.
 */
export const releaseConsumer = script(1, `
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending == 0 then return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return -1
`)
