import { Delivery, Failure } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, FastCheck as fc, Fiber, Option, Stream, TestClock } from "effect"
import * as Memory from "../src/Transport/Memory.js"
import { Publisher, Subscriber } from "../src/Transport.js"


const encoder = new TextEncoder()
const msg = (id: string, key = "") => ({ id, key, payload: encoder.encode(id), headers: {} })

type Op =
  | { readonly _tag: "publish"; readonly count: number }
  | { readonly _tag: "take" }
  | { readonly _tag: "ack" }
  | { readonly _tag: "nack"; readonly delayMs: number }
  | { readonly _tag: "crash" }
  | { readonly _tag: "advance"; readonly ms: number }

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ _tag: fc.constant("publish" as const), count: fc.integer({ min: 1, max: 4 }) }),
  fc.constant({ _tag: "take" as const }),
  fc.constant({ _tag: "ack" as const }),
  fc.record({ _tag: fc.constant("nack" as const), delayMs: fc.constantFrom(0, 50, 500) }),
  fc.constant({ _tag: "crash" as const }),
  fc.record({ _tag: fc.constant("advance" as const), ms: fc.integer({ min: 1, max: 2_000 }) })
)

describe("memory transport under TestClock", () => {
  it.effect.prop(
    "no message is lost by any sequence of publish / take / ack / nack / crash / time passing",
    { ops: fc.array(op, { maxLength: 60 }) },
    ({ ops }) =>
      Effect.gen(function*() {
        const transport = yield* Memory.make({ visibilityTimeout: "1 second" })
        const topic = "prop"
        let published = 0
        const acked = new Set<string>()
        // Deliveries held by the current consumer; a crash forgets them without settling.
        let held: Array<Delivery.Delivery> = []
        let pull = yield* Stream.toPull(transport.subscribe(topic))
        const tryTake = Effect.gen(function*() {
          const fiber = yield* Effect.fork(pull)
          yield* TestClock.adjust(0)
          const result = yield* Fiber.poll(fiber)
          if (result._tag === "Some" && result.value._tag === "Success") {
            held.push(...Chunk.toReadonlyArray(result.value.value))
          } else yield* Fiber.interrupt(fiber)
        })
        for (const step of ops) {
          switch (step._tag) {
            case "publish":
              yield* transport.publish(topic, Array.from({ length: step.count }, () => msg(`m-${published++}`)))
              break
            case "take":
              yield* tryTake
              break
            case "ack": {
              const d = held.shift()
              if (d) {
                yield* d.ack
                acked.add(d.message.id)
              }
              break
            }
            case "nack": {
              const d = held.shift()
              if (d) yield* d.nack({ delay: Duration.millis(step.delayMs) })
              break
            }
            case "crash":
              held = []
              pull = yield* Stream.toPull(transport.subscribe(topic))
              break
            case "advance":
              yield* TestClock.adjust(Duration.millis(step.ms))
              break
          }
        }
        // Heal: a fresh consumer acks everything that is still owed, with time moving on. An ack counted above
        // may have been stale (its delivery had timed out and gone back), settling nothing: the heal also goes on
        // while anything is still pending.
        held = []
        pull = yield* Stream.toPull(transport.subscribe(topic))
        for (let round = 0; round < published * 3 + 5 && (acked.size < published || transport.pending(topic) > 0); round++) {
          yield* tryTake
          for (const d of held.splice(0)) {
            yield* d.ack
            acked.add(d.message.id)
          }
          yield* TestClock.adjust("1 second")
        }
        expect(acked.size).toBe(published)
        expect(transport.pending(topic)).toBe(0)
      }).pipe(Effect.scoped),
    { fastCheck: { numRuns: 100 } }
  )

  it.effect("visibility timeout is measured on Effect's clock", () =>
    Effect.gen(function*() {
      const transport = yield* Memory.make({ visibilityTimeout: "10 seconds" })
      yield* transport.publish("t", [msg("one")])
      const first = yield* transport.subscribe("t").pipe(Stream.runHead, Effect.flatten)
      const second = yield* Effect.fork(transport.subscribe("t").pipe(Stream.runHead, Effect.flatten))
      yield* TestClock.adjust("9 seconds")
      expect(Option.isNone(yield* Fiber.poll(second))).toBe(true)
      yield* TestClock.adjust("1 second")
      const redelivered = yield* Fiber.join(second)
      expect(redelivered.message.id).toBe("one")
      expect(redelivered.attempt).toBe(2)
      // The first holder's late ack settles nothing: the redelivery owns the message now.
      yield* first.ack
      expect(transport.pending("t")).toBe(1)
      yield* redelivered.ack
      expect(transport.pending("t")).toBe(0)
    }))

  it.effect("dead-letter copies carry the reason", () =>
    Effect.gen(function*() {
      const transport = yield* Memory.make()
      yield* transport.publish("orders", [msg("bad", "k")])
      const d = yield* transport.subscribe("orders").pipe(Stream.runHead, Effect.flatten)
      const record = Failure.toRecord(new Error("no"), Failure.verdict("permanent", "auth"))
      yield* d.deadLetter(new Delivery.DeadLetterReason({ category: "auth", error: record, attempts: 1 }))
      const dead = yield* transport.subscribe("orders.dlq").pipe(Stream.runHead, Effect.flatten)
      expect(Delivery.readDeadLetterReason(dead.message.headers)?.category).toBe("auth")
      expect(transport.pending("orders")).toBe(0)
    }))

  it.effect("the layer provides both ports from one transport", () =>
    Effect.gen(function*() {
      const publisher = yield* Publisher
      const subscriber = yield* Subscriber
      yield* publisher.publish("x", [msg("1")])
      const d = yield* subscriber.subscribe("x").pipe(Stream.runHead, Effect.flatten)
      expect(d.message.id).toBe("1")
    }).pipe(Effect.provide(Memory.layer())))
})

describe("memory transport capacity", () => {
  it.effect("a publisher faster than its consumer waits at capacity: the topic never holds more than the bound", () =>
    Effect.gen(function*() {
      const capacity = 50
      const total = 2_000
      const transport = yield* Memory.make({ capacity })
      const topic = "bounded"
      let highWater = 0
      const producer = yield* Effect.fork(Effect.forEach(
        Array.from({ length: total }, (_, i) => i),
        (i) => Effect.zipRight(transport.publish(topic, [msg(`m-${i}`)]), Effect.sync(() => {
          highWater = Math.max(highWater, transport.pending(topic))
        })),
        { discard: true }
      ))
      yield* TestClock.adjust(0)
      // Nobody consumes yet: the producer is held at the bound instead of queueing all 2 000 messages.
      expect(transport.pending(topic)).toBe(capacity)
      expect(Option.isNone(yield* Fiber.poll(producer))).toBe(true)
      const received = new Set<string>()
      yield* transport.subscribe(topic).pipe(
        Stream.take(total),
        Stream.runForEach((d) => Effect.zipRight(d.ack, Effect.sync(() => received.add(d.message.id))))
      )
      yield* Fiber.join(producer)
      // Nothing was lost or duplicated on the way, and the heap held at most `capacity` messages of the topic.
      expect(received.size).toBe(total)
      expect(highWater).toBeLessThanOrEqual(capacity)
      expect(transport.pending(topic)).toBe(0)
    }))

  it.effect("dead-lettering never waits on a full dead-letter topic, and frees room for the producer", () =>
    Effect.gen(function*() {
      const transport = yield* Memory.make({ capacity: 2 })
      yield* transport.publish("orders", [msg("a"), msg("b")])
      const blocked = yield* Effect.fork(transport.publish("orders", [msg("c")]))
      yield* TestClock.adjust(0)
      expect(Option.isNone(yield* Fiber.poll(blocked))).toBe(true)
      const record = Failure.toRecord(new Error("no"), Failure.verdict("permanent", "schema"))
      const reason = new Delivery.DeadLetterReason({ category: "schema", error: record, attempts: 1 })
      const deliveries = yield* transport.subscribe("orders").pipe(Stream.take(2), Stream.runCollect)
      for (const d of deliveries) yield* d.deadLetter(reason)
      yield* Fiber.join(blocked)
      expect(transport.pending("orders")).toBe(1)
      expect(transport.pending("orders.dlq")).toBe(2)
    }))
})
