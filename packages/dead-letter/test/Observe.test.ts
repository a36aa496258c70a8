import { Delivery, Envelope, Observe } from "@bulwark/core"
import { Memory, Transport } from "@bulwark/transport"
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Fiber, Layer, Schema } from "effect"
import { deadLetter, drain } from "../src/DeadLetter.js"
import * as Store from "../src/DeadLetterStore.js"
import * as MemoryStore from "../src/DeadLetterStore/Memory.js"
import * as Replay from "../src/Replay.js"
import { newEntry } from "./contract.js"

const Order = Schema.Struct({ orderId: Schema.String })

const recorder = () => {
  const events: Array<Observe.Event> = []
  return { events, observer: (event: Observe.Event) => void events.push(event) }
}

/** A publisher that refuses the topic `unreachable` and accepts the rest. */
const publisher = Layer.succeed(Transport.Publisher, {
  publish: (topic: string) =>
    topic === "unreachable" ? Effect.fail(new Transport.PublishError({ topic, cause: "broker down" })) : Effect.void
})

describe("Dead-letter events", () => {
  it.effect("the middleware announces the stored entry", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const store = yield* MemoryStore.make
      const handler = deadLetter(store, { topic: "orders", schema: Order })(() => Effect.fail({ status: 401 }))
      const envelope = yield* Envelope.make({
        id: "o-1",
        type: "order.paid",
        source: "/shop",
        subject: "order-o-1",
        data: { orderId: "o-1" },
        time: DateTime.unsafeMake(0)
      })
      yield* handler(envelope).pipe(Observe.observe(observer))
      const [entry] = yield* store.list()
      expect(events).toEqual([{
        source: "dead-letter",
        kind: "stored",
        attributes: { entryId: entry!.id, topic: "orders", messageId: "o-1", category: "auth", attempts: 1 }
      }])
    }))

  it.live("drain announces each copy it stores", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const transport = yield* Transport.Publisher
      yield* transport.publish(Delivery.deadLetterTopic("payments"), [{
        id: "raw-1",
        key: "k",
        payload: new TextEncoder().encode("{}"),
        headers: { [Delivery.DeadLetterHeaders.category]: "schema", [Delivery.DeadLetterHeaders.attempts]: "3" }
      }])
      const drainer = yield* Effect.fork(drain("payments").pipe(Observe.observe(observer)))
      yield* Effect.sleep("10 millis").pipe(Effect.repeat({ until: () => events.length > 0, times: 500 }))
      yield* Fiber.interrupt(drainer)
      expect(events).toHaveLength(1)
      expect(events[0]).toMatchObject({
        source: "dead-letter",
        kind: "stored",
        attributes: { topic: "payments", messageId: "raw-1" }
      })
    }).pipe(Effect.provide(Layer.merge(MemoryStore.layer, Memory.layer({ visibilityTimeout: "5 seconds" })))))

  it.effect("replay announces claimed, published, replayed; released on a failed publish; skipped when already replayed", () =>
    Effect.gen(function*() {
      const { events, observer } = recorder()
      const store = yield* Store.DeadLetterStore
      const good = yield* store.add(newEntry("orders", "m-1"))
      const stuck = yield* store.add(newEntry("unreachable", "m-2"))
      yield* Replay.replay({ ids: [good.id], rate: 0 })
      yield* Replay.replay({ ids: [good.id, stuck.id], rate: 0 }).pipe(Observe.observe(observer))
      expect(events.every((e) => e.source === "replay")).toBe(true)
      expect(events.map((e) => [e.kind, e.attributes.entryId])).toEqual([
        ["skipped", good.id],
        ["claimed", stuck.id],
        ["released", stuck.id]
      ])

      events.length = 0
      const fresh = yield* store.add(newEntry("orders", "m-3"))
      yield* Replay.replay({ ids: [fresh.id], rate: 0 }).pipe(Observe.observe(observer))
      expect(events).toEqual([
        { source: "replay", kind: "claimed", attributes: { entryId: fresh.id, messageId: "m-3" } },
        { source: "replay", kind: "published", attributes: { entryId: fresh.id, messageId: "m-3", topic: "orders" } },
        { source: "replay", kind: "replayed", attributes: { entryId: fresh.id } }
      ])
    }).pipe(Effect.provide(Layer.merge(MemoryStore.layer, publisher))))
})
