/**
 * Dead-letter replay over JetStream, whose duplicate window (2 minutes by default) drops a message whose
 * `Nats-Msg-Id` it has seen: a replay must travel under its own id to be delivered at all.
 */
import { Delivery, Failure } from "@bulwark/core"
import { DeadLetter, DeadLetterStore as Store, MemoryDeadLetterStore, Replay } from "@bulwark/dead-letter"
import { Transport } from "@bulwark/transport"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Option, Stream } from "effect"
import { NatsTransport } from "../src/index.js"
import { deleteStreams, natsUrl, uniquePrefix } from "./support.js"

const prefix = uniquePrefix("replay")
afterAll(async () => {
  await deleteStreams(prefix)
})

const encoder = new TextEncoder()
const cloudEvent = (id: string) =>
  encoder.encode(JSON.stringify({ specversion: "1.0", id, source: "/test", type: "order.paid", data: { n: 1 } }))

const takeOne = (stream: Stream.Stream<Delivery.Delivery, Transport.SubscribeError>) =>
  stream.pipe(Stream.take(1), Stream.runCollect, Effect.map((all) => Chunk.unsafeHead(all)), Effect.timeout("10 seconds"))

const giveUp = (attempts: number) =>
  new Delivery.DeadLetterReason({
    category: "dependency",
    error: new Failure.FailureRecord({ tag: "HttpError", message: "503 from billing", classification: "transient", category: "dependency", status: 503 }),
    attempts
  })

describe("dead-letter replay over NATS JetStream", () => {
  it.live("a replay within the duplicate window of the original message is delivered, and its failure updates the same entry", () =>
    Effect.gen(function*() {
      // The stream's default duplicate window: two minutes, far longer than this test.
      const nats = yield* NatsTransport.make({ servers: natsUrl, prefix, ackWait: "2 seconds" })
      const store = yield* MemoryDeadLetterStore.make
      const topic = `orders-${Date.now().toString(36)}`
      const payload = cloudEvent("o-1")
      yield* nats.publish(topic, [{ id: "o-1", key: "k-1", payload, headers: { "correlation-id": "c-1" } }])

      // The consumer gives up; the drain stores the dead-lettered copy, then acks it.
      const drainOnce = Effect.gen(function*() {
        const copy = yield* takeOne(nats.subscribe(Delivery.deadLetterTopic(topic), { group: "drain" }))
        const entry = yield* DeadLetter.storeDelivery(store, topic, copy)
        yield* copy.ack
        return entry
      })
      const first = yield* takeOne(nats.subscribe(topic, { group: "consumer" }))
      yield* first.deadLetter(giveUp(first.attempt))
      const entry = yield* drainOnce

      const report = yield* Replay.replay({ ids: [entry.id] }).pipe(
        Effect.provideService(Store.DeadLetterStore, store),
        Effect.provideService(Transport.Publisher, { publish: nats.publish })
      )
      expect(report.replayed).toEqual([entry.id])
      // Delivered (not swallowed as a duplicate of o-1), same bytes, under the replay's id.
      const replayed = yield* takeOne(nats.subscribe(topic, { group: "consumer" }))
      expect(replayed.message.id).toBe(Replay.replayMessageId("o-1", 1))
      expect([...replayed.message.payload]).toEqual([...payload])
      expect(replayed.message.headers[Replay.ReplayedFromHeader]).toBe(entry.id)
      expect(replayed.message.headers["correlation-id"]).toBe("c-1")

      // It fails again: its copy comes back under the replay's id and updates the one entry.
      yield* replayed.deadLetter(giveUp(replayed.attempt))
      const again = yield* drainOnce
      expect([again.id, again.messageId, again.replay, again.replayCount]).toEqual([entry.id, "o-1", "pending", 1])
      expect((yield* store.list({ originTopic: topic })).length).toBe(1)
      expect(Option.getOrThrow(yield* store.get(entry.id)).headers).toEqual({ "correlation-id": "c-1" })
    }).pipe(Effect.scoped), 60_000)

  it.live("a replay JetStream drops as a duplicate is a failure, never replayed; the entry stays pending", () =>
    Effect.gen(function*() {
      const nats = yield* NatsTransport.make({ servers: natsUrl, prefix, ackWait: "2 seconds" })
      const store = yield* MemoryDeadLetterStore.make
      const topic = `dupes-${Date.now().toString(36)}`
      const entry = yield* store.add({
        message: { id: "o-2", topic, key: "k-2", payload: cloudEvent("o-2"), headers: {} },
        category: "dependency",
        error: giveUp(1).error,
        attempts: 1
      })
      // The driver itself: a repeated id within the window fails when asked to reject duplicates.
      yield* nats.publish(topic, [{ id: "probe", key: "", payload: cloudEvent("probe"), headers: {} }])
      const direct = yield* Effect.flip(
        nats.publish(topic, [{ id: "probe", key: "", payload: cloudEvent("probe"), headers: {} }], { rejectDuplicates: true })
      )
      expect(direct.cause).toBeInstanceOf(Transport.DuplicateMessage)
      // A replayer published the first replay and died before marking it; its lease has ended.
      yield* store.claimReplay(entry.id, "1 millis")
      yield* nats.publish(topic, [{ id: Replay.replayMessageId("o-2", 1), key: "k-2", payload: cloudEvent("o-2"), headers: {} }])
      yield* Effect.sleep("20 millis")
      const report = yield* Replay.replay({ ids: [entry.id] }).pipe(
        Effect.provideService(Store.DeadLetterStore, store),
        Effect.provideService(Transport.Publisher, { publish: nats.publish })
      )
      expect(report.replayed).toEqual([])
      expect(report.failed.map((f) => f.id)).toEqual([entry.id])
      expect(report.failed[0]!.error.cause).toBeInstanceOf(Transport.DuplicateMessage)
      expect(Option.getOrThrow(yield* store.get(entry.id)).replay).toBe("pending")
    }).pipe(Effect.scoped), 60_000)
})
