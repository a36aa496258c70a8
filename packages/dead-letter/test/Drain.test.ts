import { Delivery, Failure, Supervise } from "@bulwark/core"
import { Memory, Transport } from "@bulwark/transport"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Logger, LogLevel, Stream } from "effect"
import { drain } from "../src/DeadLetter.js"
import * as Store from "../src/DeadLetterStore.js"
import * as MemoryStore from "../src/DeadLetterStore/Memory.js"

const encoder = new TextEncoder()

const copy = (id: string) => ({
  id,
  key: id,
  payload: encoder.encode(id),
  headers: Delivery.deadLetterHeaders(
    { id, topic: "payments", key: id, payload: encoder.encode(id), headers: {} },
    new Delivery.DeadLetterReason({
      category: "dependency",
      error: new Failure.FailureRecord({ tag: "X", message: "down", classification: "permanent", category: "dependency" }),
      attempts: 3
    })
  )
})

describe("DeadLetter.drain", () => {
  it.live("subscribes again when its subscription breaks, instead of ending", () =>
    Effect.gen(function*() {
      const transport = yield* Memory.make({ visibilityTimeout: "200 millis" })
      let subscriptions = 0
      const flaky = Layer.succeed(Transport.Subscriber, {
        features: transport.features,
        subscribe: (topic, options) =>
          Stream.suspend(() =>
            subscriptions++ === 0
              ? transport.subscribe(topic, options).pipe(
                Stream.take(1),
                Stream.concat(Stream.fail(new Transport.SubscribeError({ topic, cause: "connection lost" })))
              )
              : transport.subscribe(topic, options)
          )
      })
      const store = yield* MemoryStore.make
      yield* transport.publish(Delivery.deadLetterTopic("payments"), [copy("d-1"), copy("d-2"), copy("d-3")])
      const drainer = yield* drain("payments").pipe(
        Effect.provide(flaky),
        Effect.provideService(Store.DeadLetterStore, store),
        Effect.fork
      )
      const entries = yield* store.list({ originTopic: "payments" }).pipe(
        Effect.zipLeft(Effect.sleep("20 millis")),
        Effect.repeat({ until: (all) => all.length === 3 }),
        Effect.timeout("10 seconds")
      )
      expect(entries.map((e) => e.messageId).sort()).toEqual(["d-1", "d-2", "d-3"])
      expect(subscriptions).toBe(2)
      expect((yield* Supervise.health).get("dead-letter-drain:payments")).toBe("up")
      yield* Fiber.interrupt(drainer)
    }).pipe(Logger.withMinimumLogLevel(LogLevel.None)))
})
