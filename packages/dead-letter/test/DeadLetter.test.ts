import { Delivery, Envelope, Failure, Handler, Pipeline, Telemetry } from "@bulwark/core"
import { Memory, Transport } from "@bulwark/transport"
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Fiber, Layer, Metric, Option, ParseResult, Ref, Schema, Stream, TestClock } from "effect"
import { deadLetter, drain, storeDelivery } from "../src/DeadLetter.js"
import * as Store from "../src/DeadLetterStore.js"
import * as MemoryStore from "../src/DeadLetterStore/Memory.js"
import * as Replay from "../src/Replay.js"
import { newEntry, Published } from "./contract.js"
import * as RateLimiter from "@bulwark/resilience/RateLimiter"
import * as RateLimiterStore from "@bulwark/resilience/RateLimiterStore"

const Order = Schema.Struct({ orderId: Schema.String, total: Schema.Number })
type Order = typeof Order.Type

const order = (id: string, attempt = 1) =>
  Envelope.make({
    id,
    type: "order.paid",
    source: "/shop",
    subject: `order-${id}`,
    data: { orderId: id, total: 12.5 },
    time: DateTime.unsafeMake(1_700_000_000_000),
    headers: { "correlation-id": `corr-${id}` },
    attempt
  })

const failingWith = (error: unknown) => (_: Envelope.Envelope<Order>) => Effect.fail(error)

const withStore = <A, E>(f: (store: Store.Service) => Effect.Effect<A, E>) => Effect.flatMap(MemoryStore.make, f)

describe("deadLetter middleware", () => {
  it.effect("stores a permanently failed envelope with its category and acks it", () =>
    withStore((store) =>
      Effect.gen(function*() {
        const handler = deadLetter(store, { topic: "orders", schema: Order })(failingWith({ status: 401, message: "unauthorized" }))
        const env = yield* order("o-1")
        yield* handler(env)
        const [entry] = yield* store.list()
        expect(entry!.category).toBe("auth")
        expect(entry!.error.status).toBe(401)
        expect(entry!.originTopic).toBe("orders")
        expect(entry!.key).toBe("order-o-1")
        expect(entry!.type).toBe("order.paid")
        const back = yield* Envelope.decode(Order)(entry!.payload)
        expect(back.data).toEqual(env.data)
        expect(back.headers["correlation-id"]).toBe("corr-o-1")
        expect(Handler.stagesOf(handler)).toEqual(["deadLetter"])
      })))

  it.effect("lets early transient failures through for redelivery and stores the last attempt", () =>
    withStore((store) =>
      Effect.gen(function*() {
        const handler = deadLetter(store, { topic: "orders", schema: Order, maxAttempts: 3 })(
          failingWith({ status: 503, message: "unavailable" })
        )
        const error = yield* Effect.flip(handler(yield* order("o-2", 2)))
        expect(error).toEqual({ status: 503, message: "unavailable" })
        expect(yield* store.list()).toEqual([])
        yield* handler(yield* order("o-2", 3))
        const [entry] = yield* store.list()
        expect(entry!.category).toBe("dependency")
        expect(entry!.attempts).toBe(3)
      })))

  it.effect("chooses the category from the error: decode → schema, timeout → timeout", () =>
    withStore((store) =>
      Effect.gen(function*() {
        const parseError = ParseResult.parseError(new ParseResult.Type(Schema.Number.ast, "x"))
        yield* deadLetter(store, { topic: "t-schema", schema: Order })(failingWith(parseError))(yield* order("o-3"))
        const slow = Handler.timeout("1 second")((_: Envelope.Envelope<Order>) => Effect.never)
        const timed = deadLetter(store, { topic: "t-timeout", schema: Order, maxAttempts: 1 })(slow)
        const fiber = yield* Effect.fork(timed(yield* order("o-4")))
        yield* TestClock.adjust("2 seconds")
        yield* Fiber.join(fiber)
        expect((yield* store.list({ originTopic: "t-schema" }))[0]!.category).toBe("schema")
        expect((yield* store.list({ originTopic: "t-timeout" }))[0]!.category).toBe("timeout")
        expect(Handler.stagesOf(timed)).toEqual(["timeout", "deadLetter"])
      })))

  it.effect("with a retry stage inside, a transient failure is stored on the first delivery", () =>
    withStore((store) =>
      Effect.gen(function*() {
        const retried = Handler.withStage("retry", failingWith({ status: 502 }), failingWith({ status: 502 }))
        yield* deadLetter(store, { topic: "orders", schema: Order })(retried)(yield* order("o-5", 1))
        expect((yield* store.list())[0]!.category).toBe("dependency")
      })))

  it.effect("when storing fails, the original failure propagates so the message is not lost", () =>
    withStore((memory) =>
      Effect.gen(function*() {
        const broken: Store.Service = {
          ...memory,
          add: () => Effect.fail(new Store.DeadLetterStoreError({ operation: "add", cause: "disk full" }))
        }
        const original = new Failure.PermanentError({ category: "unknown", message: "card declined" })
        const error = yield* Effect.flip(deadLetter(broken, { topic: "orders", schema: Order })(failingWith(original))(yield* order("o-6")))
        expect(error).toBe(original)
      })))
})

describe("alerts", () => {
  it.effect("fire once when depth reaches the threshold and once on recovery", () =>
    Effect.gen(function*() {
      const events = yield* Ref.make<ReadonlyArray<Store.AlertEvent>>([])
      const store = yield* Effect.flatMap(MemoryStore.make, (s) =>
        Store.withAlerts(s, { threshold: 3, recoverAt: 1, onAlert: (e) => Ref.update(events, (all) => [...all, e]) }))
      const added = yield* Effect.forEach(["a", "b", "c", "d"], (id) => store.add(newEntry("orders", id)))
      expect(yield* Ref.get(events)).toEqual([{ _tag: "DepthExceeded", depth: 3, threshold: 3 }])
      for (const entry of added.slice(0, 3)) {
        yield* store.claimReplay(entry.id, "1 minute")
        yield* store.markReplayed(entry.id)
      }
      expect(yield* Ref.get(events)).toEqual([
        { _tag: "DepthExceeded", depth: 3, threshold: 3 },
        { _tag: "DepthRecovered", depth: 1, threshold: 3 }
      ])
      yield* store.add(newEntry("orders", "e"))
      yield* store.add(newEntry("orders", "f"))
      expect((yield* Ref.get(events)).length).toBe(3)
    }))
})

describe("replay", () => {
  it.effect("is rate-limited to N messages per second", () =>
    Effect.gen(function*() {
      const store = yield* Store.DeadLetterStore
      const published = yield* Published
      yield* Effect.forEach(["1", "2", "3", "4", "5"], (id) => store.add(newEntry("rated", id)))
      const fiber = yield* Effect.fork(Replay.replay({ rate: 2 }))
      yield* TestClock.adjust("1 second")
      expect((yield* Ref.get(published)).length).toBe(3)
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(report.replayed.length).toBe(5)
      expect((yield* Ref.get(published)).map((p) => p.message.id)).toEqual(["1", "2", "3", "4", "5"].map((id) => Replay.replayMessageId(id, 1)))
    }).pipe(
      Effect.provide(Layer.merge(
        MemoryStore.layer,
        Layer.effect(Transport.Publisher, Effect.map(Published, (published) => ({
          publish: (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) =>
            Ref.update(published, (all) => [...all, ...messages.map((message) => ({ topic, message }))])
        }))).pipe(Layer.provideMerge(Published.Default))
      ))
    ))
})

describe("replay with a shared rate limiter", () => {
  it.effect("two replayers take their permits from one limit: 2 a second between them", () =>
    Effect.gen(function*() {
      const store = yield* Store.DeadLetterStore
      const published = yield* Published
      const added = yield* Effect.forEach(["1", "2", "3", "4", "5", "6"], (id) => store.add(newEntry("shared", id)))
      // Two limiters of one name over one store: two replaying processes sharing a Redis or SQL limit.
      const limit = { limit: { kind: "slidingWindow", limit: 2, window: "1 second" } } as const
      const first = yield* RateLimiter.make("dlq", limit)
      const second = yield* RateLimiter.make("dlq", limit)
      const a = yield* Effect.fork(Replay.replay({ ids: added.slice(0, 3).map((e) => e.id), limiter: first }))
      const b = yield* Effect.fork(Replay.replay({ ids: added.slice(3).map((e) => e.id), limiter: second }))
      yield* TestClock.adjust("10 millis")
      expect((yield* Ref.get(published)).length).toBe(2)
      yield* TestClock.adjust("1 second")
      expect((yield* Ref.get(published)).length).toBe(4)
      yield* TestClock.adjust("1 second")
      expect((yield* Fiber.join(a)).replayed.length + (yield* Fiber.join(b)).replayed.length).toBe(6)
    }).pipe(
      Effect.provide(Layer.mergeAll(
        MemoryStore.layer,
        RateLimiterStore.layerMemory,
        Layer.effect(Transport.Publisher, Effect.map(Published, (published) => ({
          publish: (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) =>
            Ref.update(published, (all) => [...all, ...messages.map((message) => ({ topic, message }))])
        }))).pipe(Layer.provideMerge(Published.Default))
      ))
    ))
})

describe("end to end with the memory transport", () => {
  it.live("pipeline dead-letters land in the store through the .dlq drain, and replay brings them back", () =>
    Effect.gen(function*() {
      const store = yield* Store.DeadLetterStore
      const publisher = yield* Transport.Publisher
      const subscriber = yield* Transport.Subscriber
      const deadLettered = (category: string) =>
        Effect.map(Metric.value(Telemetry.deadLettered.pipe(Metric.tagged("destination", "payments"), Metric.tagged("category", category))), (s) => s.count)
      const before = { schema: yield* deadLettered("schema"), auth: yield* deadLettered("auth") }
      const drainer = yield* Effect.fork(drain("payments"))
      const good = yield* order("p-1")
      const garbage = new TextEncoder().encode("{not json")
      yield* Transport.publishEnvelopes(Order)("payments", [good])
      yield* publisher.publish("payments", [{ id: "raw-1", key: "k", payload: garbage, headers: { "x-source": "legacy" } }])
      const handled = yield* Ref.make(0)
      yield* Pipeline.run(
        subscriber.subscribe("payments").pipe(Stream.take(2)),
        (_: Envelope.Envelope<Order>) => Effect.zipRight(Ref.update(handled, (n) => n + 1), Effect.fail({ status: 403 })),
        { schema: Order }
      )
      // The drain runs concurrently: poll (bounded) until both copies are stored.
      const entries = yield* store.list({ originTopic: "payments" }).pipe(
        Effect.zipLeft(Effect.sleep("10 millis")),
        Effect.repeat({ until: (all) => all.length === 2, times: 500 })
      )
      yield* Fiber.interrupt(drainer)
      const byId = new Map(entries.map((e) => [e.messageId, e]))
      expect(byId.get("raw-1")!.category).toBe("schema")
      // The message's own headers, plus the trace context its publish wrote (the payload is not touched).
      const { traceparent, ...own } = byId.get("raw-1")!.headers
      expect(own).toEqual({ "x-source": "legacy" })
      expect(traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/)
      expect([...byId.get("raw-1")!.payload]).toEqual([...garbage])
      expect(byId.get("p-1")!.category).toBe("auth")
      expect(yield* Ref.get(handled)).toBe(1)
      // Counted once each: where the pipeline dead-lettered them, not again when the drain stored them.
      expect((yield* deadLettered("schema")) - before.schema).toBe(1)
      expect((yield* deadLettered("auth")) - before.auth).toBe(1)
      // Replay the auth failure (fixed credentials): it arrives on the origin topic again.
      const report = yield* Replay.replay({ ids: [byId.get("p-1")!.id] })
      expect(report.replayed).toEqual([byId.get("p-1")!.id])
      const [again] = yield* subscriber.subscribe("payments").pipe(Stream.take(1), Stream.runCollect)
      // Under the replay's own transport id, the envelope (and its id) unchanged.
      expect(again!.message.id).toBe("p-1:replay:1")
      expect(again!.message.payload).toEqual(byId.get("p-1")!.payload)
      expect(again!.message.headers[Replay.ReplayedFromHeader]).toBe(byId.get("p-1")!.id)
      yield* again!.ack
      expect(Option.getOrThrow(yield* store.get(byId.get("p-1")!.id)).replay).toBe("replayed")
      expect(Delivery.deadLetterTopic("payments")).toBe("payments.dlq")
    }).pipe(Effect.provide(Layer.merge(MemoryStore.layer, Memory.layer({ visibilityTimeout: "5 seconds" })))))
})

describe("dead-lettered again after a replay", () => {
  const copyOf = (message: Delivery.Message): Delivery.Delivery => ({
    message,
    attempt: 1,
    ack: Effect.void,
    nack: () => Effect.void,
    deadLetter: () => Effect.void
  })
  const reason = new Delivery.DeadLetterReason({
    category: "dependency",
    error: new Failure.FailureRecord({ tag: "HttpError", message: "503", classification: "transient", category: "dependency", status: 503 }),
    attempts: 5
  })

  it.effect("the drain ignores a redelivered copy of the original once the entry was replayed; a copy of the failed replay makes it pending", () =>
    withStore((store) =>
      Effect.gen(function*() {
        const original: Delivery.Message = { id: "d-1", topic: "orders.dlq", key: "k", payload: new Uint8Array([1]), headers: {} }
        const copy = copyOf({ ...original, headers: Delivery.deadLetterHeaders({ ...original, topic: "orders" }, reason) })
        const entry = yield* storeDelivery(store, "orders", copy)
        yield* store.markReplayed(Option.getOrThrow(yield* store.claimReplay(entry.id, "1 minute")))
        // The drain crashed before acking its copy and gets it again.
        expect((yield* storeDelivery(store, "orders", copy)).replay).toBe("replayed")
        const replayedMessage = {
          ...original,
          id: Replay.replayMessageId("d-1", 1),
          topic: "orders",
          headers: { [Replay.ReplayedFromHeader]: entry.id, [Replay.ReplayGenerationHeader]: "1" }
        }
        const failedReplay = copyOf({ ...replayedMessage, headers: Delivery.deadLetterHeaders(replayedMessage, reason) })
        const again = yield* storeDelivery(store, "orders", failedReplay)
        expect([again.id, again.messageId, again.replay, again.replayCount]).toEqual([entry.id, "d-1", "pending", 1])
      })))

  it.effect("the middleware, which cannot tell generations apart, makes a replayed entry pending again when it fails again", () =>
    withStore((store) =>
      Effect.gen(function*() {
        const handler = deadLetter(store, { topic: "orders", schema: Order })(failingWith({ status: 401, message: "unauthorized" }))
        yield* handler(yield* order("m-1"))
        const [entry] = yield* store.list()
        yield* store.markReplayed(Option.getOrThrow(yield* store.claimReplay(entry!.id, "1 minute")))
        // The replay (same envelope) fails again.
        yield* handler(yield* order("m-1"))
        const again = Option.getOrThrow(yield* store.get(entry!.id))
        expect([again.replay, again.replayCount]).toEqual(["pending", 1])
      })))
})
