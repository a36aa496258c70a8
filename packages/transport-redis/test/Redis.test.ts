import { Delivery, Failure } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Layer, Schedule, Stream } from "effect"
import { createServer } from "node:net"
import { Transport } from "@bulwark/transport"
import { RedisTransport } from "../src/index.js"
import { admin, clientsNamed, deleteKeys, nothingWithin, takeN, testPrefix, url } from "./helpers.js"

const encoder = new TextEncoder()

const message = (id: string, key = "", headers: Record<string, string> = {}): Transport.OutgoingMessage => ({
  id,
  key,
  payload: encoder.encode(JSON.stringify({ id })),
  headers
})

const reason = new Delivery.DeadLetterReason({
  category: "schema",
  attempts: 1,
  error: new Failure.FailureRecord({
    tag: "BadInput",
    message: "rejected by the test",
    classification: "permanent",
    category: "schema"
  })
})

/** A transport under a fresh key prefix whose keys are deleted when the test's scope closes. */
const setup = (label: string, options: RedisTransport.Options = {}) =>
  Effect.gen(function*() {
    const keyPrefix = testPrefix(label)
    const redis = yield* admin
    yield* Effect.addFinalizer(() => deleteKeys(redis, keyPrefix))
    const connectionName = `bulwark-test-${label}-${Math.floor(Math.random() * 1e9).toString(36)}`
    const transport = yield* RedisTransport.make({ url, keyPrefix, connectionName, visibilityTimeout: "600 millis", ...options })
    return { transport, redis, keyPrefix, connectionName, key: (topic: string) => RedisTransport.streamKey(keyPrefix, topic) }
  })

const pendingCount = (redis: import("ioredis").Redis, key: string, group: string) =>
  Effect.promise(async () => Number(((await redis.xpending(key, group)) as [number])[0]))

describe("starting", () => {
  it.live("an unreachable server is a typed error within the connect timeout, not a hang", () =>
    Effect.gen(function*() {
      const error = yield* RedisTransport.make({ url: "redis://127.0.0.1:1", connectTimeout: "2 seconds" }).pipe(
        Effect.scoped,
        Effect.flip,
        Effect.timeout("10 seconds")
      )
      expect(error._tag).toBe("RedisConnectionError")
      expect(error.message).toContain("redis://127.0.0.1:1")
    }))

  it.scopedLive("a server that accepts but never answers fails after connectTimeout", () =>
    Effect.gen(function*() {
      const silent = yield* Effect.acquireRelease(
        Effect.async<import("node:net").Server>((resume) => {
          const server = createServer(() => {})
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.sync(() => server.close())
      )
      const port = (silent.address() as import("node:net").AddressInfo).port
      const error = yield* RedisTransport.make({ url: `redis://127.0.0.1:${port}`, connectTimeout: "500 millis" }).pipe(
        Effect.scoped,
        Effect.flip,
        Effect.timeout("10 seconds")
      )
      expect(error._tag).toBe("RedisConnectionError")
    }))

  it.live("an unusable URL is a typed error", () =>
    Effect.gen(function*() {
      const notUrl = yield* Effect.flip(Effect.scoped(RedisTransport.make({ url: "not a url" })))
      expect(notUrl._tag).toBe("RedisConnectionError")
      const wrongScheme = yield* Effect.flip(Effect.scoped(RedisTransport.make({ url: "http://user:secret@127.0.0.1:6379" })))
      expect(wrongScheme.message).toContain("unsupported scheme http:")
      expect(wrongScheme.message).not.toContain("secret")
    }))

  it.scopedLive("layerConfig reads BULWARK_REDIS_URL and BULWARK_REDIS_KEY_PREFIX", () =>
    Effect.gen(function*() {
      const keyPrefix = testPrefix("config")
      const redis = yield* admin
      yield* Effect.addFinalizer(() => deleteKeys(redis, keyPrefix))
      const provider = (map: Record<string, string>) => Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(map))))
      yield* Effect.flatMap(Transport.Publisher, (p) => p.publish("orders", [message("c-1")])).pipe(
        Effect.provide(RedisTransport.layerConfig().pipe(Layer.provide(provider({ BULWARK_REDIS_URL: url, BULWARK_REDIS_KEY_PREFIX: keyPrefix }))))
      )
      expect(yield* Effect.promise(() => redis.xlen(`${keyPrefix}orders`))).toBe(1)
      const unreachable = yield* Effect.flip(Effect.provide(
        Transport.Publisher,
        RedisTransport.layerConfig({ connectTimeout: "2 seconds" }).pipe(Layer.provide(provider({ BULWARK_REDIS_URL: "redis://127.0.0.1:1" })))
      ))
      expect(unreachable._tag).toBe("RedisConnectionError")
    }))

  it.scopedLive("declares its features honestly: not ordered, persistent only when the server writes an append-only file", () =>
    Effect.gen(function*() {
      const { transport, redis } = yield* setup("features")
      const info = yield* Effect.promise(() => redis.info("persistence"))
      expect(transport.features.persistent).toBe(/^aof_enabled:1\s*$/m.test(info))
      expect(transport.features.orderedPerKey).toBe(false)
      expect(transport.features.delayedNack).toBe(true)
      expect(transport.features.consumerGroups).toBe(true)
      expect(transport.features.dedupeWindow).toBeUndefined()
      const declared = yield* setup("features-override", { persistent: true })
      expect(declared.transport.features.persistent).toBe(true)
    }))
})

describe("wire format", () => {
  it.scopedLive("an entry carries id, key, headers and the raw payload as fields", () =>
    Effect.gen(function*() {
      const { transport, redis, key } = yield* setup("fields")
      yield* transport.publish("t", [{ id: "m-1", key: "k", headers: { a: "1" }, payload: new Uint8Array([0, 255, 7]) }])
      const [[, fields]] = (yield* Effect.promise(() => redis.xrangeBuffer(key("t"), "-", "+"))) as Array<[Buffer, Array<Buffer>]>
      const map = new Map<string, Buffer>()
      for (let i = 0; i < fields!.length; i += 2) map.set(fields![i]!.toString(), fields![i + 1]!)
      expect(map.get("id")!.toString()).toBe("m-1")
      expect(map.get("key")!.toString()).toBe("k")
      expect(JSON.parse(map.get("headers")!.toString())).toEqual({ a: "1" })
      expect([...map.get("payload")!]).toEqual([0, 255, 7])
    }))

  it.scopedLive("maxLength trims the stream approximately on publish", () =>
    Effect.gen(function*() {
      const { transport, redis, key } = yield* setup("maxlen", { maxLength: 10 })
      for (let batch = 0; batch < 10; batch++) {
        yield* transport.publish("t", Array.from({ length: 100 }, (_, i) => message(`m-${batch}-${i}`)))
      }
      const length = yield* Effect.promise(() => redis.xlen(key("t")))
      // `MAXLEN ~` trims whole radix-tree nodes (100 entries by default), never below the limit.
      expect(length).toBeGreaterThanOrEqual(10)
      expect(length).toBeLessThan(1000)
    }))

  it.scopedLive("publishing to a key that is not a stream is a typed PublishError", () =>
    Effect.gen(function*() {
      const { transport, redis, key } = yield* setup("wrongtype")
      yield* Effect.promise(() => redis.set(key("t"), "not a stream"))
      const error = yield* Effect.flip(transport.publish("t", [message("a"), message("b")]))
      expect(error._tag).toBe("PublishError")
      expect(error.message).toContain("WRONGTYPE")
    }))

  it.scopedLive("an entry written by another tool is delivered as is, and can be dead-lettered", () =>
    Effect.gen(function*() {
      const { transport, redis, key } = yield* setup("foreign")
      const entryId = yield* Effect.promise(() => redis.xadd(key("t"), "*", "headers", "{not json", "other", "x"))
      const stream = transport.subscribe("t")
      const [d] = yield* takeN(stream, 1)
      expect(d!.message.id).toBe(entryId)
      expect(d!.message.payload.length).toBe(0)
      expect(d!.message.headers["bulwark-redis-invalid-headers"]).toBe("{not json")
      yield* d!.deadLetter(reason)
      const [dead] = yield* takeN(transport.subscribe("t.dlq"), 1)
      expect(dead!.message.id).toBe(entryId)
      expect(Delivery.readDeadLetterReason(dead!.message.headers)?.error.tag).toBe("BadInput")
      yield* dead!.ack
    }))
})

describe("settling", () => {
  it.scopedLive("by default an ack completes once queued; ending the subscription sends its queued acks first", () =>
    Effect.gen(function*() {
      const { transport, redis, key } = yield* setup("ack-queued")
      yield* transport.publish("t", [message("q-1"), message("q-2"), message("q-3")])
      // Acked one after the other in one fiber: none waits for a round trip, and the subscription ends right
      // after the last one, before the queued XACK would otherwise have left.
      yield* transport.subscribe("t").pipe(Stream.take(3), Stream.mapEffect((d) => d.ack), Stream.runDrain)
      expect(yield* pendingCount(redis, key("t"), "default")).toBe(0)
      // An ack issued after its subscription ended is still sent (and the transport awaits it before closing).
      yield* transport.publish("t", [message("q-4")])
      const [late] = yield* takeN(transport.subscribe("t"), 1)
      expect(yield* pendingCount(redis, key("t"), "default")).toBe(1)
      yield* late!.ack
      yield* pendingCount(redis, key("t"), "default").pipe(
        Effect.repeat({ until: (n) => n === 0, schedule: Schedule.spaced("10 millis") }),
        Effect.timeout("5 seconds")
      )
      expect(yield* pendingCount(redis, key("t"), "default")).toBe(0)
    }))

  it.scopedLive("with confirmAcks, acks issued together complete once Redis has answered them", () =>
    Effect.gen(function*() {
      const { transport, redis, key } = yield* setup("ack-confirmed", { confirmAcks: true })
      yield* transport.publish("t", Array.from({ length: 5 }, (_, i) => message(`c-${i}`)))
      const deliveries = yield* takeN(transport.subscribe("t"), 5)
      yield* Effect.forEach(deliveries, (d) => d.ack, { concurrency: "unbounded", discard: true })
      expect(yield* pendingCount(redis, key("t"), "default")).toBe(0)
    }))

  it.scopedLive("attempt counts every delivery: nack, delayed nack and a takeover by XAUTOCLAIM", () =>
    Effect.gen(function*() {
      const { transport, redis, key } = yield* setup("attempts", { confirmAcks: true })
      yield* transport.publish("t", [message("a-1")])
      const stream = transport.subscribe("t")
      const [first] = yield* takeN(stream, 1)
      expect(first!.attempt).toBe(1)
      yield* first!.nack()
      const [second] = yield* takeN(stream, 1)
      expect(second!.attempt).toBe(2)
      yield* second!.nack({ delay: "200 millis" })
      const [third] = yield* takeN(stream, 1)
      expect(third!.attempt).toBe(3)
      // Left unsettled: the next subscription takes it over after the visibility timeout.
      const [fourth] = yield* takeN(transport.subscribe("t"), 1)
      expect(fourth!.message.id).toBe("a-1")
      expect(fourth!.attempt).toBe(4)
      yield* fourth!.ack
      expect(yield* pendingCount(redis, key("t"), "default")).toBe(0)
    }))

  it.scopedLive("a stale receipt settles nothing: the consumer that took the message over decides", () =>
    Effect.gen(function*() {
      const { transport, redis, key } = yield* setup("stale", { confirmAcks: true })
      yield* transport.publish("t", [message("s-1")])
      const [held] = yield* takeN(transport.subscribe("t"), 1)
      const [taken] = yield* takeN(transport.subscribe("t"), 1)
      expect(taken!.attempt).toBe(2)
      yield* held!.nack()
      yield* held!.deadLetter(reason)
      expect(yield* Effect.promise(() => redis.xlen(key("t")))).toBe(1)
      expect(yield* Effect.promise(() => redis.exists(key("t.dlq")))).toBe(0)
      yield* taken!.ack
      expect(yield* pendingCount(redis, key("t"), "default")).toBe(0)
    }))

  it.scopedLive("dead-lettering writes the copy and acknowledges the original together", () =>
    Effect.gen(function*() {
      const { transport, redis, key } = yield* setup("dlq")
      yield* transport.publish("t", [message("x-1", "kx", { "correlation-id": "c" })])
      const [d] = yield* takeN(transport.subscribe("t"), 1)
      yield* d!.deadLetter(reason)
      expect(yield* pendingCount(redis, key("t"), "default")).toBe(0)
      const dead = (yield* Effect.promise(() => redis.xrange(key("t.dlq"), "-", "+"))) as Array<[string, Array<string>]>
      expect(dead.length).toBe(1)
      const fields = dead[0]![1]
      const headers = JSON.parse(fields[fields.indexOf("headers") + 1]!) as Record<string, string>
      expect(headers[Delivery.DeadLetterHeaders.originTopic]).toBe("t")
      expect(headers[Delivery.DeadLetterHeaders.category]).toBe("schema")
      expect(headers["correlation-id"]).toBe("c")
    }))

  it.scopedLive("a delayed nack waits in the group's sorted set, then comes back to that group only", () =>
    Effect.gen(function*() {
      const { transport, redis, key, keyPrefix } = yield* setup("groups")
      const one = transport.subscribe("t", { group: "one" })
      const two = transport.subscribe("t", { group: "two" })
      yield* transport.publish("t", [message("g-1")])
      const [fromOne] = yield* takeN(one, 1)
      const [fromTwo] = yield* takeN(two, 1)
      yield* fromTwo!.ack
      yield* fromOne!.nack({ delay: "1 second" })
      expect(yield* Effect.promise(() => redis.zcard(RedisTransport.delayedKey(keyPrefix, "t", "one")))).toBe(1)
      const [again] = yield* takeN(one, 1)
      expect(again!.message.id).toBe("g-1")
      yield* again!.ack
      // Group two skips the copy meant for group one and acknowledges it.
      expect(yield* nothingWithin(two, "1 second")).toBe(true)
      expect(yield* pendingCount(redis, key("t"), "two")).toBe(0)
      expect(yield* pendingCount(redis, key("t"), "one")).toBe(0)
    }))
})

describe("connections", () => {
  it.live("a subscription's connection closes with it, and its consumer leaves the group when it holds nothing", () =>
    Effect.gen(function*() {
      const outcome = yield* Effect.scoped(Effect.gen(function*() {
        const { transport, redis, key, connectionName } = yield* setup("close")
        yield* transport.publish("t", [message("c-1")])
        yield* transport.subscribe("t").pipe(Stream.take(1), Stream.runForEach((d) => d.ack))
        const consumers = (yield* Effect.promise(() => redis.xinfo("CONSUMERS", key("t"), "default"))) as Array<unknown>
        expect(consumers.length).toBe(0)
        expect((yield* clientsNamed(redis, `${connectionName}:sub:`)).length).toBe(0)
        expect((yield* clientsNamed(redis, `${connectionName}:commands`)).length).toBe(1)
        return connectionName
      }))
      const check = yield* Effect.scoped(Effect.flatMap(admin, (r) => clientsNamed(r, outcome)))
      expect(check.length).toBe(0)
    }))

  it.scopedLive("a subscription survives its stream being deleted under it", () =>
    Effect.gen(function*() {
      const { transport, redis, key } = yield* setup("nogroup")
      const stream = transport.subscribe("t")
      yield* transport.publish("t", [message("before")])
      const [before] = yield* takeN(stream, 1)
      yield* before!.ack
      yield* Effect.promise(() => redis.del(key("t")))
      const after = yield* Effect.fork(takeN(stream, 1))
      yield* Effect.sleep("300 millis")
      yield* transport.publish("t", [message("after")])
      const [got] = yield* after.await.pipe(Effect.flatMap((exit) => Exit.isSuccess(exit) ? Effect.succeed(exit.value) : Effect.failCause(exit.cause)))
      expect(got!.message.id).toBe("after")
      yield* got!.ack
    }))
})

describe("payloads", () => {
  it.scopedLive("binary payloads of any size arrive byte for byte", () =>
    Effect.gen(function*() {
      const { transport } = yield* setup("binary")
      const big = new Uint8Array(256 * 1024).map((_, i) => (i * 31) % 256)
      yield* transport.publish("t", [{ id: "big", key: "", headers: {}, payload: big }])
      const [d] = yield* takeN(transport.subscribe("t"), 1)
      expect(Buffer.compare(Buffer.from(d!.message.payload), Buffer.from(big))).toBe(0)
      yield* d!.ack
    }))
})
