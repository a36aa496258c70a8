import { Envelope, Supervise } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Logger, LogLevel, Schema, Stream } from "effect"
import * as Memory from "../src/Transport/Memory.js"
import { consume, Publisher, publishEnvelopes, SubscribeError, Subscriber } from "../src/Transport.js"

const Payload = Schema.Struct({ n: Schema.Number })

/** A subscriber whose first subscription breaks (a lost connection) after `before` deliveries. */
const breaksOnce = (transport: Memory.MemoryTransport, before: number) => {
  let subscriptions = 0
  const layer = Layer.succeed(Subscriber, {
    features: transport.features,
    subscribe: (topic, options) =>
      Stream.suspend(() =>
        subscriptions++ === 0
          ? transport.subscribe(topic, options).pipe(
            Stream.take(before),
            Stream.concat(Stream.fail(new SubscribeError({ topic, cause: "connection lost" })))
          )
          : transport.subscribe(topic, options)
      )
  })
  return { layer, subscriptions: () => subscriptions }
}

describe("Transport.consume", () => {
  it.live("subscribes again when its subscription breaks, instead of ending, and handles every message", () =>
    Effect.gen(function*() {
      const transport = yield* Memory.make({ visibilityTimeout: "200 millis" })
      const flaky = breaksOnce(transport, 2)
      const events = yield* Effect.forEach([1, 2, 3, 4, 5], (n) =>
        Envelope.make({ type: "t", source: "/t", subject: `s${n}`, data: { n } }))
      yield* publishEnvelopes(Payload)("numbers", events).pipe(Effect.provideService(Publisher, transport))
      const seen = new Set<number>()
      const consumer = yield* consume("numbers", (e: Envelope.Envelope<{ readonly n: number }>) =>
        Effect.sync(() => seen.add(e.data.n)), { schema: Payload }).pipe(Effect.provide(flaky.layer), Effect.fork)
      yield* Effect.sleep("20 millis").pipe(Effect.repeat({ until: () => seen.size === 5 }), Effect.timeout("10 seconds"))
      expect([...seen].sort()).toEqual([1, 2, 3, 4, 5])
      expect(flaky.subscriptions()).toBe(2)
      expect((yield* Supervise.health).get("consume:numbers:default")).toBe("up")
      // Still consuming: a message published now is handled too.
      const late = yield* Envelope.make({ type: "t", source: "/t", subject: "s6", data: { n: 6 } })
      yield* publishEnvelopes(Payload)("numbers", [late]).pipe(Effect.provideService(Publisher, transport))
      yield* Effect.sleep("20 millis").pipe(Effect.repeat({ until: () => seen.has(6) }), Effect.timeout("10 seconds"))
      yield* Fiber.interrupt(consumer)
    }).pipe(Logger.withMinimumLogLevel(LogLevel.None)))
})
