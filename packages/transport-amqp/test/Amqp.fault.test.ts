/**
 * Connection faults: the client's socket is destroyed under it (the shared broker keeps running). The broker
 * requeues what the dead connection held; the transport reconnects and its subscriptions resume.
 */
import type { Delivery } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import type amqp from "amqplib"
import amqplib from "amqplib"
import { Chunk, Deferred, Effect, Fiber, Ref, Schedule, Stream } from "effect"
import type { Socket } from "node:net"
import * as AmqpTransport from "../src/AmqpTransport.js"
import * as FaultProxy from "../../transport/test/support/FaultProxy.js"
import { outgoing, scopedTransport, testPrefix } from "./helpers.js"

/**
 * Kills the TCP connection without an AMQP close, as a reset by the network or a crashed broker would. (A socket
 * that vanishes without any error or end is only noticed by heartbeats, which this test does not wait for.)
 */
const dropConnection = (transport: AmqpTransport.AmqpTransport) =>
  Effect.flatMap(transport.connection, (model) =>
    Effect.sync(() => {
      ;(model.connection as unknown as { stream: Socket }).stream.destroy(new Error("read ECONNRESET (simulated)"))
      return model
    }))

const take = <E>(stream: Stream.Stream<Delivery.Delivery, E>, n: number) =>
  Stream.take(stream, n).pipe(Stream.runCollect, Effect.map(Chunk.toReadonlyArray), Effect.timeout("20 seconds"))

describe("connection loss", () => {
  it.scopedLive("mid-run, twice: every confirmed message is acked in the end and the consumer resumes", () =>
    Effect.gen(function*() {
      const prefix = testPrefix("fault-run")
      const transport = yield* scopedTransport(prefix, { prefetch: 10, visibilityTimeout: "2 seconds" })
      const topic = `${prefix}-topic`
      const batches = 30
      const batchSize = 10
      const confirmed = yield* Ref.make(new Set<string>())
      const acked = yield* Ref.make(new Set<string>())
      const ackedCount = yield* Ref.make(0)
      const connections = new Set<amqp.ChannelModel>([yield* transport.connection])

      // Publish with retries: a batch that failed is sent again (the ids make duplicates harmless).
      const publisher = yield* Effect.forEach(Array.from({ length: batches }, (_, b) => b), (b) => {
        const messages = Array.from({ length: batchSize }, (_, i) => outgoing(`m-${b}-${i}`))
        return transport.publish(topic, messages).pipe(
          Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.intersect(Schedule.recurs(100)))),
          Effect.zipRight(Ref.update(confirmed, (s) => {
            const next = new Set(s)
            for (const m of messages) next.add(m.id)
            return next
          })),
          Effect.zipRight(Effect.sleep("5 millis"))
        )
      }, { discard: true }).pipe(Effect.fork)

      const consumer = yield* transport.subscribe(topic).pipe(
        Stream.runForEach((d) =>
          d.ack.pipe(
            Effect.zipRight(Ref.update(acked, (s) => new Set(s).add(d.message.id))),
            Effect.zipRight(Ref.update(ackedCount, (n) => n + 1)),
            // An ack on the dropped connection fails: the broker redelivers that message.
            Effect.catchTag("DeliveryError", () => Effect.void)
          )
        ),
        Effect.fork
      )

      const waitFor = (predicate: () => Effect.Effect<boolean>) =>
        Effect.repeat(predicate(), { until: (ok) => ok, schedule: Schedule.spaced("20 millis") }).pipe(
          Effect.timeout("30 seconds")
        )
      yield* waitFor(() => Effect.map(Ref.get(ackedCount), (n) => n >= 50))
      connections.add(yield* dropConnection(transport))
      yield* waitFor(() => Effect.map(Ref.get(ackedCount), (n) => n >= 150))
      connections.add(yield* dropConnection(transport))
      yield* Fiber.join(publisher)
      yield* waitFor(() => Effect.map(Ref.get(acked), (s) => s.size === batches * batchSize))
      connections.add(yield* transport.connection)
      yield* Fiber.interrupt(consumer)

      const confirmedIds = yield* Ref.get(confirmed)
      const ackedIds = yield* Ref.get(acked)
      expect(confirmedIds.size).toBe(batches * batchSize)
      expect([...confirmedIds].every((id) => ackedIds.has(id))).toBe(true)
      // Two reconnections: three distinct connections served the run.
      expect(connections.size).toBe(3)
      const left = yield* transport.withChannel("check", (channel) =>
        channel.checkQueue(AmqpTransport.queueName(topic, "default")))
      expect(left.messageCount).toBe(0)
    }), 60_000)

  it.scopedLive("a delivery held across the loss cannot be acked (typed error) and comes back, counted as a redelivery", () =>
    Effect.gen(function*() {
      const prefix = testPrefix("fault-held")
      const transport = yield* scopedTransport(prefix, { visibilityTimeout: "2 seconds" })
      const topic = `${prefix}-topic`
      yield* transport.publish(topic, [outgoing("h-1")])
      const stream = transport.subscribe(topic)
      const holding = yield* Deferred.make<Delivery.Delivery>()
      const first = yield* stream.pipe(
        Stream.runForEach((d) => Deferred.succeed(holding, d)),
        Effect.fork
      )
      const held = yield* Deferred.await(holding).pipe(Effect.timeout("20 seconds"))
      const dropped = yield* dropConnection(transport)
      // An ack written while the socket dies is silently lost (AMQP acks are not confirmed) and the message comes
      // back; once the loss is noticed, settling fails with a typed error instead.
      yield* Effect.repeat(transport.connection, { until: (model) => model !== dropped, schedule: Schedule.spaced("20 millis") }).pipe(Effect.timeout("20 seconds"))
      const error = yield* Effect.flip(held.ack)
      expect(error._tag).toBe("DeliveryError")
      yield* Fiber.interrupt(first)
      const [again] = yield* take(transport.subscribe(topic), 1)
      expect(again!.message.id).toBe("h-1")
      expect(again!.attempt).toBe(2)
      yield* again!.ack
    }), 60_000)

  it.scopedLive("a publish during the loss waits for the reconnection and is delivered", () =>
    Effect.gen(function*() {
      const prefix = testPrefix("fault-publish")
      const transport = yield* scopedTransport(prefix)
      const topic = `${prefix}-topic`
      yield* transport.publish(topic, [outgoing("before")])
      const before = yield* transport.connection
      yield* dropConnection(transport)
      yield* transport.publish(topic, [outgoing("after")]).pipe(
        // The socket may die with the first attempt in flight: that attempt fails typed, the retry succeeds.
        Effect.retry({ while: (error) => error._tag === "PublishError", times: 5 })
      )
      expect(yield* transport.connection).not.toBe(before)
      const got = yield* take(transport.subscribe(topic), 2)
      yield* Effect.forEach(got, (d) => d.ack)
      expect(got.map((d) => d.message.id).sort()).toEqual(["after", "before"])
    }), 60_000)
})

/** Deletes a topic's exchange and its default group's queue, over a plain amqplib connection of its own. */
const deleteTopic = (url: string, topic: string) =>
  Effect.tryPromise(async () => {
    const connection = await amqplib.connect(url)
    try {
      const channel = await connection.createChannel()
      await channel.deleteQueue(AmqpTransport.queueName(topic, "default"))
      await channel.deleteExchange(AmqpTransport.exchangeName(topic))
    } finally {
      await connection.close()
    }
  }).pipe(Effect.catchAll((error) => Effect.logError("test clean-up failed", error)))

it.live("a broker that stops answering: a publish fails (transient) within the publish timeout, the next works once it answers, and closing does not hang", () =>
  Effect.scoped(Effect.gen(function*() {
    const prefix = testPrefix("stall")
    const topic = `${prefix}-stall`
    const base = new URL(process.env["BULWARK_AMQP_URL"] ?? AmqpTransport.defaultUrl)
    // The transport under test is closed while the broker hangs, so it cannot delete what it declared: a
    // connection of its own does, once the proxy is gone.
    yield* Effect.addFinalizer(() => deleteTopic(base.toString(), topic))
    yield* FaultProxy.expectStalledPublishFails({
      port: Number(base.port || 5672),
      make: (port) => {
        const through = new URL(base)
        through.host = `127.0.0.1:${port}`
        return AmqpTransport.make({ url: through.toString(), publishTimeout: "3 seconds" })
      },
      topic,
      message: (id) => outgoing(id),
      within: "15 seconds",
      closeWithin: "15 seconds"
    })
  })), 120_000)
