import { Delivery } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Ref, Schedule, Stream } from "effect"
import { connect } from "nats"
import { NatsTransport } from "../src/index.js"
import * as FaultProxy from "../../transport/test/support/FaultProxy.js"
import { deleteStreams, natsUrl, startProxy, uniquePrefix } from "./support.js"

const prefix = uniquePrefix("fault")
afterAll(async () => {
  await deleteStreams(prefix)
})

const encoder = new TextEncoder()
const message = (id: string): Transport.OutgoingMessage => ({ id, key: "", payload: encoder.encode(id), headers: {} })
const ids = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `f-${from + i}`)

/** The client talks to NATS through a proxy the test controls, so the test can drop its connection. */
const throughProxyWith = (options: NatsTransport.Options) =>
  Effect.gen(function*() {
    const proxy = yield* Effect.acquireRelease(Effect.promise(() => startProxy()), (p) => Effect.promise(() => p.close()))
    const nats = yield* NatsTransport.make({
      servers: proxy.url,
      prefix,
      ackWait: "1 second",
      reconnectTimeWait: "100 millis",
      requestTimeout: "2 seconds",
      pullExpires: "2 seconds",
      batchSize: 32,
      ...options
    })
    return { proxy, nats }
  })
const throughProxy = throughProxyWith({})

/** What the consumer still owes, read with a separate connection straight to the server. */
const consumerBacklog = (stream: string, durable: string) =>
  Effect.promise(async () => {
    const nc = await connect({ servers: natsUrl })
    try {
      const info = await (await nc.jetstreamManager()).consumers.info(stream, durable)
      return { pending: info.num_pending, unacked: info.num_ack_pending }
    } finally {
      await nc.close()
    }
  })

/** The pull requests waiting at the server for the consumer, read straight from the server. */
const waitingRequests = (stream: string, durable: string) =>
  Effect.promise(async () => {
    const nc = await connect({ servers: natsUrl })
    try {
      return (await (await nc.jetstreamManager()).consumers.info(stream, durable)).num_waiting
    } finally {
      await nc.close()
    }
  })

/** Re-reads `read` until `done` holds or 20 s pass; answers the last reading. */
const eventually = <A>(read: Effect.Effect<A>, done: (a: A) => boolean) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 20_000
    let value = yield* read
    while (!done(value) && Date.now() < deadline) {
      yield* Effect.sleep("100 millis")
      value = yield* read
    }
    return value
  })

/** Publishing during an outage fails typed; the caller retries, and the stream's dedupe drops repeats. */
const publishRetrying = (nats: NatsTransport.NatsTransport, topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) =>
  nats.publish(topic, messages).pipe(
    Effect.retry({ schedule: Schedule.spaced("200 millis"), times: 100 })
  )

describe("NATS transport: faults", () => {
  it.live("a connection dropped mid-run loses nothing acknowledged, and the consumer resumes", () =>
    Effect.gen(function*() {
      const { nats, proxy } = yield* throughProxy
      const topic = `drop-${Date.now().toString(36)}`
      const total = 300
      const everything = ids(0, total)
      yield* publishRetrying(nats, topic, everything.slice(0, 150).map(message))

      const acked = yield* Ref.make(new Set<string>())
      const ackedAfterDrop = yield* Ref.make(0)
      const dropped = yield* Ref.make(false)
      const halfway = yield* Deferred.make<void>()
      const done = yield* Deferred.make<void>()
      yield* nats.subscribe(topic).pipe(
        Stream.runForEach((delivery) =>
          Effect.gen(function*() {
            // Slow enough that the outage hits deliveries in flight and prefetched ones.
            yield* Effect.sleep("3 millis")
            // An ack lost with the connection is not an error here: the message comes back and is acked again.
            const ok = yield* delivery.ack.pipe(Effect.as(true), Effect.catchAll(() => Effect.succeed(false)))
            if (!ok) return
            if (yield* Ref.get(dropped)) yield* Ref.update(ackedAfterDrop, (n) => n + 1)
            const size = yield* Ref.modify(acked, (set) => {
              const next = new Set(set).add(delivery.message.id)
              return [next.size, next] as const
            })
            if (size >= 50) yield* Deferred.succeed(halfway, undefined)
            if (size === total) yield* Deferred.succeed(done, undefined)
          })
        ),
        Effect.fork
      )
      yield* Deferred.await(halfway).pipe(Effect.timeout("20 seconds"))

      // The broker becomes unreachable for a while: live connections are cut and new ones refused.
      yield* Ref.set(dropped, true)
      yield* Effect.promise(() => proxy.pause())
      const publisher = yield* Effect.fork(publishRetrying(nats, topic, everything.slice(150).map(message)))
      yield* Effect.sleep("1 second")
      yield* Effect.promise(() => proxy.resume())

      yield* Fiber.join(publisher).pipe(Effect.timeout("30 seconds"))
      yield* Deferred.await(done).pipe(Effect.timeout("30 seconds"))
      expect([...(yield* Ref.get(acked))].sort()).toEqual([...everything].sort())
      expect(yield* Ref.get(ackedAfterDrop)).toBeGreaterThan(0)
      expect(proxy.accepted()).toBeGreaterThanOrEqual(2)
      const names = nats.names(topic) as { stream: string }
      // The server agrees: nothing left to deliver and nothing waiting for an ack (the last acks may still be in flight).
      const backlog = yield* eventually(consumerBacklog(names.stream, "default"), (b) => b.pending === 0 && b.unacked === 0)
      expect(backlog).toEqual({ pending: 0, unacked: 0 })
    }).pipe(Effect.scoped), 60_000)

  it.live("an idle subscriber whose connection drops receives what is published after it reconnects", () =>
    Effect.gen(function*() {
      const { nats, proxy } = yield* throughProxy
      const topic = `idle-${Date.now().toString(36)}`
      yield* nats.publish(topic, [message("before")])
      const received = yield* Ref.make<ReadonlyArray<Delivery.Delivery>>([])
      const first = yield* Deferred.make<void>()
      yield* nats.subscribe(topic).pipe(
        Stream.runForEach((delivery) =>
          Effect.zipRight(
            delivery.ack,
            Effect.zipRight(Ref.update(received, (all) => [...all, delivery]), Deferred.succeed(first, undefined))
          )
        ),
        Effect.fork
      )
      yield* Deferred.await(first).pipe(Effect.timeout("20 seconds"))
      // The subscriber now waits in a long poll; cutting the connection loses that request on the server.
      yield* Effect.sleep("300 millis")
      proxy.cut()
      yield* publishRetrying(nats, topic, [message("after")])
      const all = yield* eventually(Ref.get(received), (all) => all.length >= 2)
      expect(all.map((d) => d.message.id)).toEqual(["before", "after"])
      expect(proxy.accepted()).toBeGreaterThanOrEqual(2)
    }).pipe(Effect.scoped), 60_000)

  it.live("a delivery lost with its connection comes back ahead of the messages of its key published after the reconnect", () =>
    Effect.gen(function*() {
      const { nats, proxy } = yield* throughProxyWith({ ackWait: "3 seconds" })
      const direct = yield* NatsTransport.make({ servers: natsUrl, prefix })
      const topic = `lost-${Date.now().toString(36)}`
      const keyed = (id: string): Transport.OutgoingMessage => ({ ...message(id), key: "k" })
      yield* direct.publish(topic, [keyed("first")])
      const received = yield* Ref.make<ReadonlyArray<string>>([])
      yield* nats.subscribe(topic).pipe(
        Stream.runForEach((delivery) =>
          Effect.zipRight(delivery.ack, Ref.update(received, (all) => [...all, `${delivery.message.id}#${delivery.attempt}`]))
        ),
        Effect.fork
      )
      yield* eventually(Ref.get(received), (all) => all.length >= 1)
      // The subscriber now waits in a long poll. The server hands it the next message into a connection that
      // dies before the bytes arrive: delivered as far as the server knows, never received.
      yield* Effect.sleep("300 millis")
      proxy.mute()
      yield* direct.publish(topic, [keyed("lost")])
      const names = nats.names(topic) as { stream: string }
      const delivered = yield* eventually(consumerBacklog(names.stream, "default"), (b) => b.unacked === 1)
      expect(delivered).toEqual({ pending: 0, unacked: 1 })
      proxy.cut()
      yield* eventually(Effect.sync(() => proxy.accepted()), (n) => n >= 2)
      // Published once the subscriber is back, well within the lost delivery's ack wait.
      yield* direct.publish(topic, [keyed("later-1"), keyed("later-2")])
      const all = yield* eventually(Ref.get(received), (all) => all.length >= 4)
      expect(all).toEqual(["first#1", "lost#2", "later-1#1", "later-2#1"])
    }).pipe(Effect.scoped), 60_000)

  it.live("a reconnect that finds an idle long poll open but nothing lost goes on delivering well within the ack wait", () =>
    Effect.gen(function*() {
      const { nats, proxy } = yield* throughProxyWith({ ackWait: "4 seconds", pullExpires: "1 second" })
      const direct = yield* NatsTransport.make({ servers: natsUrl, prefix })
      const topic = `idle-${Date.now().toString(36)}`
      yield* direct.publish(topic, [message("first")])
      const received = yield* Ref.make<ReadonlyArray<{ readonly id: string; readonly at: number }>>([])
      yield* nats.subscribe(topic).pipe(
        Stream.runForEach((delivery) =>
          Effect.zipRight(delivery.ack, Ref.update(received, (all) => [...all, { id: delivery.message.id, at: Date.now() }]))
        ),
        Effect.fork
      )
      yield* eventually(Ref.get(received), (all) => all.length >= 1)
      const names = nats.names(topic) as { stream: string }
      // The subscriber is drained and waits in a long poll when its connection drops.
      expect(yield* eventually(waitingRequests(names.stream, "default"), (n) => n === 1)).toBe(1)
      expect(yield* consumerBacklog(names.stream, "default")).toEqual({ pending: 0, unacked: 0 })
      proxy.cut()
      yield* eventually(Effect.sync(() => proxy.accepted()), (n) => n >= 2)
      // The long poll open at the drop would still be served into the new connection (its inbox is subscribed
      // again) until it expires: only a request sent after the reconnect can carry the next message.
      yield* Effect.sleep("1500 millis")
      const published = Date.now()
      yield* direct.publish(topic, [message("second")])
      const all = yield* eventually(Ref.get(received), (all) => all.length >= 2)
      expect(all.map((r) => r.id)).toEqual(["first", "second"])
      // A hold would have kept it back until the ack wait (4 s) had passed since the reconnect.
      expect(all[1]!.at - published).toBeLessThan(1_500)
    }).pipe(Effect.scoped), 60_000)

  it.live("an ack made while disconnected is dropped by the client: the delivery comes back after the ack wait, and the subscription does not wait for it", () =>
    Effect.gen(function*() {
      const { nats, proxy } = yield* throughProxyWith({ ackWait: "4 seconds", pullExpires: "1 second" })
      const direct = yield* NatsTransport.make({ servers: natsUrl, prefix })
      const topic = `offline-ack-${Date.now().toString(36)}`
      yield* direct.publish(topic, [message("held")])
      const kept = yield* Deferred.make<Delivery.Delivery>()
      const received = yield* Ref.make<ReadonlyArray<{ readonly id: string; readonly at: number }>>([])
      yield* nats.subscribe(topic).pipe(
        Stream.runForEach((delivery) =>
          delivery.message.id === "held" && delivery.attempt === 1
            ? Deferred.succeed(kept, delivery)
            : Effect.zipRight(
              delivery.ack,
              Ref.update(received, (all) => [...all, { id: `${delivery.message.id}#${delivery.attempt}`, at: Date.now() }])
            )
        ),
        Effect.fork
      )
      const held = yield* Deferred.await(kept)
      const names = nats.names(topic) as { stream: string }
      expect(yield* eventually(waitingRequests(names.stream, "default"), (n) => n === 1)).toBe(1)
      yield* Effect.promise(() => proxy.pause())
      yield* Effect.sleep("300 millis")
      // Accepted by the client while it has no connection.
      yield* held.ack
      yield* Effect.promise(() => proxy.resume())
      yield* eventually(Effect.sync(() => proxy.accepted()), (n) => n >= 2)
      yield* Effect.sleep("1500 millis")
      const published = Date.now()
      yield* direct.publish(topic, [message("after")])
      const all = yield* eventually(Ref.get(received), (all) => all.length >= 2)
      expect(all.map((r) => r.id)).toEqual(["after#1", "held#2"])
      expect(all[0]!.at - published).toBeLessThan(1_500)
    }).pipe(Effect.scoped), 60_000)
})

it.live("a server that stops answering: a publish fails (transient) within the request timeout, the next works once it answers, and closing does not hang", () =>
  Effect.scoped(FaultProxy.expectStalledPublishFails({
    port: Number(new URL(natsUrl).port || 4222),
    make: (port) => NatsTransport.make({ servers: `nats://127.0.0.1:${port}`, prefix, requestTimeout: "2 seconds" }),
    topic: "stall",
    message,
    within: "10 seconds",
    closeWithin: "10 seconds"
  })), 90_000)
