import { Envelope, Failure, Handler, Pipeline } from "@bulwark/core"
import { Memory, Transport } from "@bulwark/transport"
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Duration, Effect, Fiber, Layer, Metric, Ref, Schema, Stream, TestClock } from "effect"
import * as Store from "../src/IdempotencyStore.js"
import * as MemoryStore from "../src/IdempotencyStore/Memory.js"
import { byBusinessKey, byPayloadHash, canonicalJson, idempotent } from "../src/Idempotent.js"

const Payment = Schema.Struct({ orderId: Schema.String, amount: Schema.Number })
type Payment = typeof Payment.Type

const envelope = (id: string, data: Payment, subject = data.orderId) =>
  Envelope.make({ id, type: "payment.captured", source: "/test", subject, data, time: DateTime.unsafeMake(0) })

const counting = Effect.map(Ref.make(0), (runs) => ({
  runs,
  handler: (_: Envelope.Envelope<Payment>) => Ref.update(runs, (n) => n + 1)
}))

const hits = (state: "completed" | "in_progress") => Metric.value(Metric.tagged(Store.hitsTotal, "state", state))

describe("idempotent middleware", () => {
  it.effect("a completed duplicate returns without running the handler, and is counted as a hit", () =>
    Effect.gen(function*() {
      const { handler, runs } = yield* counting
      const wrapped = idempotent<Payment>({ lease: "10 seconds" })(handler)
      const before = (yield* hits("completed")).count
      const env = yield* envelope("evt-1", { orderId: "o-1", amount: 10 })
      yield* wrapped(env)
      yield* wrapped({ ...env, attempt: 2 })
      yield* wrapped(env)
      expect(yield* Ref.get(runs)).toBe(1)
      expect((yield* hits("completed")).count - before).toBe(2)
      expect(Handler.stagesOf(wrapped)).toEqual(["idempotency"])
    }).pipe(Effect.provide(MemoryStore.layer())))

  it.effect("a failed run releases the key so the redelivery runs again", () =>
    Effect.gen(function*() {
      const attempts = yield* Ref.make(0)
      const flaky = (_: Envelope.Envelope<Payment>) =>
        Effect.flatMap(Ref.updateAndGet(attempts, (n) => n + 1), (n) =>
          n === 1 ? Effect.fail(new Failure.TransientError({ category: "dependency", message: "503" })) : Effect.void)
      const wrapped = idempotent<Payment>({ lease: "10 seconds" })(flaky)
      const env = yield* envelope("evt-2", { orderId: "o-2", amount: 10 })
      const error = yield* Effect.flip(wrapped(env))
      expect(error._tag).toBe("TransientError")
      yield* wrapped(env)
      yield* wrapped(env)
      expect(yield* Ref.get(attempts)).toBe(2)
    }).pipe(Effect.provide(MemoryStore.layer())))

  it.effect("a concurrent duplicate is nacked with the rest of the lease as a transient delay, never run twice", () =>
    Effect.gen(function*() {
      const runs = yield* Ref.make(0)
      const slow = (_: Envelope.Envelope<Payment>) => Effect.zipRight(Ref.update(runs, (n) => n + 1), Effect.sleep("5 seconds"))
      const wrapped = idempotent<Payment>({ lease: "30 seconds", onInProgress: "nack" })(slow)
      const env = yield* envelope("evt-3", { orderId: "o-3", amount: 10 })
      const first = yield* Effect.fork(wrapped(env))
      yield* TestClock.adjust("1 second")
      const before = (yield* hits("in_progress")).count
      const error = yield* Effect.flip(wrapped(env))
      expect(error._tag).toBe("IdempotencyInProgressError")
      const verdict = yield* Failure.classify(error)
      expect(verdict.classification).toBe("transient")
      expect(Duration.toMillis(verdict.retryAfter!)).toBe(29_000)
      expect((yield* hits("in_progress")).count - before).toBe(1)
      yield* TestClock.adjust("5 seconds")
      yield* Fiber.join(first)
      yield* wrapped(env)
      expect(yield* Ref.get(runs)).toBe(1)
    }).pipe(Effect.provide(MemoryStore.layer())))

  it.effect("a concurrent duplicate told to wait returns once the first run completes, without running", () =>
    Effect.gen(function*() {
      const runs = yield* Ref.make(0)
      const slow = (_: Envelope.Envelope<Payment>) => Effect.zipRight(Ref.update(runs, (n) => n + 1), Effect.sleep("2 seconds"))
      const wrapped = idempotent<Payment>({ lease: "30 seconds", onInProgress: "wait", maxWait: "10 seconds" })(slow)
      const env = yield* envelope("evt-4", { orderId: "o-4", amount: 10 })
      const first = yield* Effect.fork(wrapped(env))
      yield* TestClock.adjust("10 millis")
      const second = yield* Effect.fork(wrapped(env))
      yield* TestClock.adjust("3 seconds")
      yield* Fiber.join(first)
      yield* Fiber.join(second)
      expect(yield* Ref.get(runs)).toBe(1)
    }).pipe(Effect.provide(MemoryStore.layer())))

  it.effect("waiting is bounded: past maxWait the duplicate fails with InProgressError", () =>
    Effect.gen(function*() {
      const slow = (_: Envelope.Envelope<Payment>) => Effect.sleep("1 minute")
      const wrapped = idempotent<Payment>({ lease: "2 minutes", onInProgress: "wait", maxWait: "5 seconds" })(slow)
      const env = yield* envelope("evt-5", { orderId: "o-5", amount: 10 })
      yield* Effect.fork(wrapped(env))
      yield* TestClock.adjust("10 millis")
      const second = yield* Effect.fork(Effect.flip(wrapped(env)))
      yield* TestClock.adjust("6 seconds")
      const error = yield* Fiber.join(second)
      expect(error._tag).toBe("IdempotencyInProgressError")
    }).pipe(Effect.provide(MemoryStore.layer())))

  it.effect("key strategies: business key and payload hash catch re-sends under new ids", () =>
    Effect.gen(function*() {
      const { handler, runs } = yield* counting
      const byOrder = idempotent<Payment>({ key: byBusinessKey((e) => e.data.orderId), namespace: "biz:" })(handler)
      yield* byOrder(yield* envelope("a", { orderId: "o-6", amount: 1 }))
      yield* byOrder(yield* envelope("b", { orderId: "o-6", amount: 2 }))
      expect(yield* Ref.get(runs)).toBe(1)
      const byHash = idempotent<Payment>({ key: "payloadHash", namespace: "hash:" })(handler)
      yield* byHash(yield* envelope("c", { orderId: "o-7", amount: 1 }))
      // Same data, keys in another order: the same canonical JSON, the same key.
      yield* byHash(yield* envelope("d", { amount: 1, orderId: "o-7" } as Payment))
      yield* byHash(yield* envelope("e", { orderId: "o-7", amount: 2 }))
      expect(yield* Ref.get(runs)).toBe(3)
      expect(canonicalJson({ b: [1, { y: 1, x: 2 }], a: null })).toBe('{"a":null,"b":[1,{"x":2,"y":1}]}')
      const e1 = yield* envelope("x", { orderId: "o", amount: 1 })
      expect(byPayloadHash(e1)).toBe(byPayloadHash({ ...e1, id: "y" }))
    }).pipe(Effect.provide(MemoryStore.layer())))

  it.effect("IdempotencyStore.run returns the stored outcome to duplicates", () =>
    Effect.gen(function*() {
      const runs = yield* Ref.make(0)
      const charge = Effect.as(Ref.update(runs, (n) => n + 1), { chargeId: "ch_1", at: DateTime.unsafeMake(1000) })
      const Outcome = Schema.Struct({ chargeId: Schema.String, at: Schema.DateTimeUtc })
      const a = yield* Store.run("charge:o-8", charge, Outcome, { lease: "10 seconds" })
      const b = yield* Store.run("charge:o-8", charge, Outcome, { lease: "10 seconds" })
      expect(yield* Ref.get(runs)).toBe(1)
      expect(b.chargeId).toBe(a.chargeId)
      expect(DateTime.toEpochMillis(b.at)).toBe(1000)
      const wrongSchema = yield* Effect.flip(
        Store.run("charge:o-8", Effect.succeed(0), Schema.Number, { lease: "10 seconds" })
      )
      expect(wrongSchema._tag).toBe("IdempotencyOutcomeDecodeError")
    }).pipe(Effect.provide(MemoryStore.layer())))

  it.live("in a pipeline, a message delivered twice is handled once and both deliveries are acked", () =>
    Effect.gen(function*() {
      const { handler, runs } = yield* counting
      const stack = idempotent<Payment>({ lease: "10 seconds" })(Handler.timeout("5 seconds")(handler))
      const env = yield* envelope("evt-9", { orderId: "o-9", amount: 10 })
      yield* Transport.publishEnvelopes(Payment)("payments", [env, env])
      const subscriber = yield* Transport.Subscriber
      const stats = yield* Pipeline.run(subscriber.subscribe("payments").pipe(Stream.take(2)), stack, {
        schema: Payment
      })
      expect(stats.acked).toBe(2)
      expect(yield* Ref.get(runs)).toBe(1)
    }).pipe(Effect.provide(Layer.merge(MemoryStore.layer(), Memory.layer()))))
})
