import { Envelope, Pipeline } from "@bulwark/core"
import { expect, it } from "@effect/vitest"
import { Transport } from "@bulwark/transport"
import { Duration, Effect, Fiber, Schema, Stream } from "effect"
import { RedisTransport } from "../src/index.js"
import * as FaultProxy from "../../transport/test/support/FaultProxy.js"
import { admin, clientsNamed, deleteKeys, testPrefix, url } from "./helpers.js"

const Order = Schema.Struct({ n: Schema.Number })

/** Polls `condition` every 100 ms until it holds or `within` passes; answers whether it held. */
const eventually = (condition: Effect.Effect<boolean>, within: Duration.DurationInput) =>
  Effect.gen(function*() {
    const deadline = Date.now() + Duration.toMillis(Duration.decode(within))
    while (Date.now() < deadline) {
      if (yield* condition) return true
      yield* Effect.sleep("100 millis")
    }
    return yield* condition
  })

it.live("connections killed mid-run (CLIENT KILL): nothing published is lost, every message is settled, the consumer resumes", () =>
  Effect.scoped(Effect.gen(function*() {
    const keyPrefix = testPrefix("fault")
    const connectionName = `bulwark-fault-${Math.floor(Math.random() * 1e9).toString(36)}`
    const redis = yield* admin
    yield* Effect.addFinalizer(() => deleteKeys(redis, keyPrefix))
    const transport = yield* RedisTransport.make({ url, keyPrefix, connectionName, visibilityTimeout: "1 second" })
    const publish = Transport.publishEnvelopes(Order)
    const total = 300
    const consumed = new Set<number>()
    const published: Array<number> = []
    let publishFailures = 0
    let killed = 0
    let publishedBeforeLastKill = 0

    const consumer = yield* Effect.fork(Pipeline.run(
      transport.subscribe("orders"),
      (envelope) => Effect.sync(() => void consumed.add(envelope.data.n)),
      { schema: Order, concurrency: 4, redeliveryDelay: () => Duration.millis(100) }
    ))

    // A producer that retries a failed publish, as any producer must: a PublishError promises nothing.
    const producer = yield* Effect.fork(Effect.gen(function*() {
      for (let n = 0; n < total; n++) {
        const envelope = yield* Envelope.make({ type: "order.placed", source: "fault-test", subject: `o-${n % 5}`, data: { n } })
        yield* publish("orders", [envelope]).pipe(
          Effect.tapError(() => Effect.sync(() => publishFailures++)),
          Effect.retry({ times: 50 }),
          Effect.provideService(Transport.Publisher, { publish: transport.publish })
        )
        published.push(n)
        yield* Effect.sleep("3 millis")
      }
    }))

    const kill = Effect.gen(function*() {
      const clients = yield* clientsNamed(redis, connectionName)
      for (const client of clients) yield* Effect.promise(() => redis.client("KILL", "ID", client.id))
      killed += clients.length
      publishedBeforeLastKill = published.length
    })
    yield* eventually(Effect.sync(() => published.length >= total / 3), "20 seconds")
    yield* kill
    yield* eventually(Effect.sync(() => published.length >= (2 * total) / 3), "20 seconds")
    yield* kill

    yield* Fiber.join(producer)
    const allConsumed = yield* eventually(Effect.sync(() => published.every((n) => consumed.has(n))), "30 seconds")
    const settled = yield* eventually(
      Effect.promise(async () => Number(((await redis.xpending(`${keyPrefix}orders`, "default")) as [number])[0]) === 0),
      "10 seconds"
    )
    yield* Fiber.interrupt(consumer)

    // Both kills hit the command connection and the subscription's blocking connection.
    expect(killed).toBeGreaterThanOrEqual(4)
    expect(publishedBeforeLastKill).toBeLessThan(total)
    expect(published.length).toBe(total)
    expect(allConsumed).toBe(true)
    expect([...consumed].sort((a, b) => a - b)).toEqual(published)
    expect(settled).toBe(true)
    expect(yield* Effect.promise(() => redis.zcard(RedisTransport.delayedKey(keyPrefix, "orders", "default")))).toBe(0)
  })), 60_000)

it.live("a subscription whose blocking connection is killed while it waits receives what is published next", () =>
  Effect.scoped(Effect.gen(function*() {
    const keyPrefix = testPrefix("fault-idle")
    const connectionName = `bulwark-fault-idle-${Math.floor(Math.random() * 1e9).toString(36)}`
    const redis = yield* admin
    yield* Effect.addFinalizer(() => deleteKeys(redis, keyPrefix))
    const transport = yield* RedisTransport.make({ url, keyPrefix, connectionName, visibilityTimeout: "1 second" })
    const received: Array<string> = []
    const consumer = yield* Effect.fork(
      Stream.runForEach(transport.subscribe("idle"), (d) =>
        Effect.zipRight(d.ack, Effect.sync(() => void received.push(d.message.id))))
    )
    yield* eventually(Effect.map(clientsNamed(redis, `${connectionName}:sub:`), (c) => c.length === 1), "5 seconds")
    for (const client of yield* clientsNamed(redis, `${connectionName}:sub:`)) {
      yield* Effect.promise(() => redis.client("KILL", "ID", client.id))
    }
    yield* transport.publish("idle", [{ id: "after-kill", key: "", headers: {}, payload: new Uint8Array([1]) }])
    expect(yield* eventually(Effect.sync(() => received.includes("after-kill")), "15 seconds")).toBe(true)
    yield* Fiber.interrupt(consumer)
  })), 60_000)

it.live("a server that stops answering: a publish fails (transient) within the socket timeout instead of hanging, the next works once it answers, and closing does not hang", () =>
  Effect.scoped(Effect.gen(function*() {
    const keyPrefix = testPrefix("stall")
    const redis = yield* admin
    yield* Effect.addFinalizer(() => deleteKeys(redis, keyPrefix))
    yield* FaultProxy.expectStalledPublishFails({
      port: Number(new URL(url).port || 6379),
      make: (port) => {
        const through = new URL(url)
        through.host = `127.0.0.1:${port}`
        return RedisTransport.make({ url: through.toString(), keyPrefix, socketTimeout: "2 seconds" })
      },
      topic: "stall",
      message: (id) => ({ id, key: "k", payload: new TextEncoder().encode(id), headers: {} }),
      within: "10 seconds",
      closeWithin: "10 seconds"
    })
  })), 90_000)
