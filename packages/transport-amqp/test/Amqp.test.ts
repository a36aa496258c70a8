import { Delivery, Failure } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, ConfigProvider, Context, Deferred, Effect, Exit, Fiber, FastCheck as fc, Layer, Option, Ref, Stream } from "effect"
import { Transport } from "@bulwark/transport"
import * as net from "node:net"
import * as AmqpTransport from "../src/AmqpTransport.js"
import { delayBucket } from "../src/internal/amqp.js"
import { outgoing, scopedTransport, testPrefix } from "./helpers.js"

const take = <E>(stream: Stream.Stream<Delivery.Delivery, E>, n: number) =>
  Stream.take(stream, n).pipe(Stream.runCollect, Effect.map(Chunk.toReadonlyArray), Effect.timeout("15 seconds"))

describe("connecting", () => {
  it.live("an unreachable server is a typed error at start, with the password masked", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(
        AmqpTransport.make({ url: "amqp://guest:secret@127.0.0.1:1", connectTimeout: "3 seconds" })
      ))
      expect(error._tag).toBe("AmqpConnectionError")
      expect(error.message).toContain("127.0.0.1:1")
      expect(error.message).not.toContain("secret")
    }))

  it.scopedLive("a server that accepts but never answers is bounded by the connect timeout, not a hang", () =>
    Effect.gen(function*() {
      const sockets = new Set<net.Socket>()
      const silent = net.createServer((socket) => void sockets.add(socket))
      yield* Effect.addFinalizer(() =>
        Effect.async<void>((resume) => {
          for (const socket of sockets) socket.destroy()
          silent.close(() => resume(Effect.void))
        })
      )
      const port = yield* Effect.async<number>((resume) => {
        silent.listen(0, "127.0.0.1", () => resume(Effect.succeed((silent.address() as net.AddressInfo).port)))
      })
      const error = yield* Effect.flip(Effect.scoped(
        AmqpTransport.make({ url: `amqp://guest:guest@127.0.0.1:${port}`, connectTimeout: "300 millis" })
      ))
      expect(error._tag).toBe("AmqpConnectionError")
    }))

  it.scopedLive("the heartbeat option reaches the broker; one given in the URL wins", () =>
    Effect.gen(function*() {
      const heartbeatOf = (transport: AmqpTransport.AmqpTransport) =>
        Effect.map(transport.connection, (model) => (model.connection as unknown as { heartbeat: number }).heartbeat)
      expect(yield* heartbeatOf(yield* AmqpTransport.make({ heartbeat: "7 seconds" }))).toBe(7)
      const fromUrl = yield* AmqpTransport.make({ url: `${AmqpTransport.defaultUrl}/%2F?heartbeat=3`, heartbeat: "7 seconds" })
      expect(yield* heartbeatOf(fromUrl)).toBe(3)
    }))

  it.live("layerConfig reads BULWARK_AMQP_URL", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.scoped(Layer.build(AmqpTransport.layerConfig({ connectTimeout: "3 seconds" })))).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["BULWARK_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/"]])))
      )
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isFailure(exit)) expect(String(exit.cause)).toContain("127.0.0.1:1")
    }))

  it.live("layerConfig defaults to the local broker", () =>
    Effect.gen(function*() {
      const features = yield* Effect.scoped(
        Effect.map(Layer.build(AmqpTransport.layerConfig()), (context) => Context.get(context, Transport.Subscriber).features)
      ).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map())))
      expect(features).toMatchObject({ persistent: true, delayedNack: true, deadLetterTopic: true, consumerGroups: true })
      expect(features.orderedPerKey).toBe(false)
    }))
})

describe("messages", () => {
  it.scopedLive("are published persistent, confirmed, with id, key and headers as AMQP properties", () =>
    Effect.gen(function*() {
      const prefix = testPrefix("props")
      const transport = yield* scopedTransport(prefix)
      const topic = `${prefix}-topic`
      yield* transport.publish(topic, [outgoing("p-1", "key-1", { "correlation-id": "c-1" })])
      const raw = yield* transport.withChannel("get", (channel) =>
        channel.get(AmqpTransport.queueName(topic, "default"), { noAck: true }))
      expect(raw).not.toBe(false)
      if (raw === false) return
      expect(raw.properties.deliveryMode).toBe(2)
      expect(raw.properties.messageId).toBe("p-1")
      expect(raw.properties.headers?.["correlation-id"]).toBe("c-1")
      expect(raw.properties.headers?.[AmqpTransport.InternalHeaders.key]).toBe("key-1")
      expect(raw.content.toString()).toBe("p-1")
    }))

  it.scopedLive("a message from a foreign publisher (no id, non-string headers) is delivered with its headers as strings", () =>
    Effect.gen(function*() {
      const prefix = testPrefix("foreign")
      const transport = yield* scopedTransport(prefix)
      const topic = `${prefix}-topic`
      yield* transport.publish(topic, [outgoing("declare")])
      yield* transport.withChannel("publish", async (channel) => {
        channel.publish(AmqpTransport.exchangeName(topic), "", Buffer.from("raw"), {
          headers: { count: 42, flag: true, bytes: Buffer.from("b") }
        })
      })
      const got = yield* take(transport.subscribe(topic), 2)
      yield* Effect.forEach(got, (d) => d.ack)
      const foreign = got.find((d) => d.message.id === "")!
      expect(foreign.message.key).toBe("")
      expect(foreign.message.headers).toEqual({ count: "42", flag: "true", bytes: "b" })
      expect(new TextDecoder().decode(foreign.message.payload)).toBe("raw")
    }))

  it.scopedLive("attempt counts every nack, with or without delay; key and headers survive the republished copies", () =>
    Effect.gen(function*() {
      const prefix = testPrefix("attempts")
      const transport = yield* scopedTransport(prefix)
      const topic = `${prefix}-topic`
      yield* transport.publish(topic, [outgoing("a-1", "key-a", { "correlation-id": "c-a" })])
      // One subscription throughout, as a consumer runs: each new subscription would leave a channel draining,
      // and a copy that reached its prefetch first comes back flagged redelivered (an honest extra attempt).
      const pull = yield* Stream.toPull(transport.subscribe(topic))
      const next = pull.pipe(Effect.map(Chunk.unsafeHead), Effect.timeout("15 seconds"))
      const first = yield* next
      yield* first.nack()
      const second = yield* next
      yield* second.nack({ delay: "150 millis" })
      const third = yield* next
      yield* third.ack
      expect([first.attempt, second.attempt, third.attempt]).toEqual([1, 2, 3])
      for (const d of [second, third]) {
        expect(d.message.id).toBe("a-1")
        expect(d.message.key).toBe("key-a")
        expect(d.message.headers).toEqual({ "correlation-id": "c-a" })
      }
    }))

  it("delays are rounded up to two significant digits: never earlier, at most 10% later", () => {
    expect(delayBucket(0)).toBe(0)
    expect(delayBucket(1000)).toBe(1000)
    expect(delayBucket(1234)).toBe(1300)
    fc.assert(fc.property(fc.integer({ min: 1, max: 10_000_000 }), (millis) => {
      const bucket = delayBucket(millis)
      expect(bucket).toBeGreaterThanOrEqual(millis)
      expect(bucket).toBeLessThanOrEqual(Math.ceil(millis * 1.1))
    }))
  })

  it.scopedLive("dead-lettering keeps the key and reaches the DLQ even when nobody subscribed to it yet", () =>
    Effect.gen(function*() {
      const prefix = testPrefix("dlq")
      const transport = yield* scopedTransport(prefix)
      const topic = `${prefix}-topic`
      yield* transport.publish(topic, [outgoing("x-1", "key-x")])
      const [first] = yield* take(transport.subscribe(topic), 1)
      yield* first!.deadLetter(new Delivery.DeadLetterReason({
        category: "schema",
        attempts: 1,
        error: new Failure.FailureRecord({ tag: "Bad", message: "bad", classification: "permanent", category: "schema" })
      }))
      const [dead] = yield* take(transport.subscribe(Delivery.deadLetterTopic(topic)), 1)
      yield* dead!.ack
      expect(dead!.message.key).toBe("key-x")
      expect(dead!.attempt).toBe(1)
      expect(Delivery.readDeadLetterReason(dead!.message.headers)?.error.tag).toBe("Bad")
    }))
})

describe("subscriptions", () => {
  it.scopedLive("prefetch bounds the unsettled deliveries of a subscription", () =>
    Effect.gen(function*() {
      const prefix = testPrefix("prefetch")
      const transport = yield* scopedTransport(prefix, { prefetch: 3 })
      const topic = `${prefix}-topic`
      yield* transport.publish(topic, Array.from({ length: 10 }, (_, i) => outgoing(`f-${i}`)))
      const held = yield* Ref.make<ReadonlyArray<Delivery.Delivery>>([])
      const three = yield* Deferred.make<void>()
      const four = yield* Deferred.make<void>()
      const fiber = yield* transport.subscribe(topic).pipe(
        Stream.runForEach((d) =>
          Effect.flatMap(Ref.updateAndGet(held, (all) => [...all, d]), (all) =>
            Effect.all([
              all.length >= 3 ? Deferred.succeed(three, undefined) : Effect.void,
              all.length >= 4 ? Deferred.succeed(four, undefined) : Effect.void
            ]))
        ),
        Effect.fork
      )
      yield* Deferred.await(three).pipe(Effect.timeout("15 seconds"))
      // The broker stops at the prefetch count until something is settled.
      expect(Option.isNone(yield* Deferred.await(four).pipe(Effect.timeout("700 millis"), Effect.option))).toBe(true)
      expect((yield* Ref.get(held)).length).toBe(3)
      yield* (yield* Ref.get(held))[0]!.ack
      yield* Deferred.await(four).pipe(Effect.timeout("15 seconds"))
      yield* Effect.forEach(yield* Ref.get(held), (d) => d.ack)
      yield* Fiber.interrupt(fiber)
    }))

  it.scopedLive("a finished subscription hands back what it never handed out at once, and its held deliveries can still be settled", () =>
    Effect.gen(function*() {
      const prefix = testPrefix("handback")
      // A long visibility timeout: only the immediate hand-back can make the second subscription quick.
      const transport = yield* scopedTransport(prefix, { visibilityTimeout: "60 seconds" })
      const topic = `${prefix}-topic`
      yield* transport.publish(topic, Array.from({ length: 5 }, (_, i) => outgoing(`h-${i}`)))
      const [held] = yield* take(transport.subscribe(topic), 1)
      const rest = yield* take(transport.subscribe(topic), 4)
      expect(rest.map((d) => d.message.id).sort()).toEqual(
        ["h-0", "h-1", "h-2", "h-3", "h-4"].filter((id) => id !== held!.message.id)
      )
      yield* held!.ack
      yield* Effect.forEach(rest, (d) => d.ack)
      const counts = yield* transport.withChannel("check", (channel) =>
        channel.checkQueue(AmqpTransport.queueName(topic, "default")))
      expect(counts.messageCount).toBe(0)
    }))

  it.scopedLive("acks sent together reach only the deliveries that were acked: an unacked one in between comes back", () =>
    Effect.gen(function*() {
      const prefix = testPrefix("batched-acks")
      // A short visibility timeout: the finished subscription's channel closes soon, returning what it still holds.
      const transport = yield* scopedTransport(prefix, { visibilityTimeout: "1 second" })
      const topic = `${prefix}-topic`
      yield* transport.publish(topic, Array.from({ length: 6 }, (_, i) => outgoing(`b-${i}`)))
      const held = yield* take(transport.subscribe(topic), 6)
      const byId = new Map(held.map((d) => [d.message.id, d]))
      // In one turn, so they share a send: b-0 and b-3 are still unacked, so neither may be covered.
      yield* Effect.forEach(["b-1", "b-2", "b-4", "b-5"], (id) => byId.get(id)!.ack, { concurrency: "unbounded" })
      yield* byId.get("b-0")!.ack
      const [back] = yield* take(transport.subscribe(topic), 1)
      expect(back!.message.id).toBe("b-3")
      expect(back!.attempt).toBe(2)
      yield* back!.ack
      const counts = yield* transport.withChannel("check", (channel) =>
        channel.checkQueue(AmqpTransport.queueName(topic, "default")))
      expect(counts.messageCount).toBe(0)
    }))

  it.scopedLive("a subscription whose queue is deleted fails with SubscribeError", () =>
    Effect.gen(function*() {
      const prefix = testPrefix("deleted")
      const transport = yield* scopedTransport(prefix)
      const topic = `${prefix}-topic`
      yield* transport.publish(topic, [outgoing("d-1")])
      const stream = transport.subscribe(topic)
      const fiber = yield* Effect.fork(Stream.runDrain(stream))
      yield* Effect.sleep("300 millis")
      yield* transport.withChannel("delete", (channel) => channel.deleteQueue(AmqpTransport.queueName(topic, "default")))
      const error = yield* Fiber.join(fiber).pipe(Effect.flip, Effect.timeout("15 seconds"))
      expect(error._tag).toBe("SubscribeError")
    }))

  it.scopedLive("a queue declared with other arguments is a SubscribeError, not a retry loop", () =>
    Effect.gen(function*() {
      const prefix = testPrefix("mismatch")
      const transport = yield* scopedTransport(prefix)
      const topic = `${prefix}-topic`
      const queue = AmqpTransport.queueName(topic, "odd")
      yield* transport.withChannel("declare", (channel) => channel.assertQueue(queue, { durable: true, maxLength: 5 }))
      yield* Effect.addFinalizer(() => Effect.ignore(transport.withChannel("delete", (channel) => channel.deleteQueue(queue))))
      const error = yield* transport.subscribe(topic, { group: "odd" }).pipe(
        Stream.runDrain,
        Effect.flip,
        Effect.timeout("15 seconds")
      )
      expect(error._tag).toBe("SubscribeError")
      expect(error.message).toContain("PRECONDITION_FAILED")
    }))
})
