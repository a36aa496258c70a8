import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, FastCheck as fc, Fiber, pipe, Schema, Stream, TestClock } from "effect"
import * as Delivery from "../src/Delivery.js"
import * as Envelope from "../src/Envelope.js"
import * as Failure from "../src/Failure.js"
import * as Handler from "../src/Handler.js"
import * as Observe from "../src/Observe.js"
import * as Pipeline from "../src/Pipeline.js"

const Payload = Schema.Struct({ n: Schema.Int })
const encode = Envelope.encode(Payload)

type Settlement =
  | { readonly kind: "ack"; readonly id: string }
  | { readonly kind: "nack"; readonly id: string; readonly delay: number }
  | { readonly kind: "deadLetter"; readonly id: string; readonly reason: Delivery.DeadLetterReason }

/** Deliveries over a fixed list of messages, recording how each is settled. */
const source = (messages: ReadonlyArray<{ id: string; key: string; payload: Uint8Array; attempt?: number }>) => {
  const settled: Array<Settlement> = []
  const deliveries = messages.map((m): Delivery.Delivery => ({
    message: { id: m.id, topic: "t", key: m.key, payload: m.payload, headers: {} },
    attempt: m.attempt ?? 1,
    ack: Effect.sync(() => void settled.push({ kind: "ack", id: m.id })),
    nack: (options) =>
      Effect.sync(() =>
        void settled.push({ kind: "nack", id: m.id, delay: options?.delay === undefined ? 0 : Duration.toMillis(Duration.decode(options.delay)) })
      ),
    deadLetter: (reason) => Effect.sync(() => void settled.push({ kind: "deadLetter", id: m.id, reason }))
  }))
  return { stream: Stream.fromIterable(deliveries), settled }
}

const message = (id: string, key: string, n: number, attempt = 1) =>
  Effect.map(
    Effect.flatMap(Envelope.make({ id, type: "test.event", source: "/test", subject: key, data: { n } }), encode),
    (payload) => ({ id, key, payload, attempt })
  )

class Flaky extends Schema.TaggedError<Flaky>()("Flaky", { status: Schema.Number, retryAfter: Schema.optional(Schema.Number) }) {}

describe("Pipeline", () => {
  it.effect("acks handled messages and hands the handler the delivery attempt", () =>
    Effect.gen(function*() {
      const { stream, settled } = source([yield* message("a", "k", 1, 3)])
      const seen: Array<number> = []
      const stats = yield* Pipeline.run(stream, (e) => Effect.sync(() => void seen.push(e.attempt)), { schema: Payload })
      expect(settled).toEqual([{ kind: "ack", id: "a" }])
      expect(seen).toEqual([3])
      expect(stats.acked).toBe(1)
    }))

  it.effect("bytes that are not an envelope are dead-lettered as schema, not dropped and not retried", () =>
    Effect.gen(function*() {
      const { stream, settled } = source([{ id: "junk", key: "", payload: new TextEncoder().encode("{nope") }])
      let ran = false
      const stats = yield* Pipeline.run(stream, () => Effect.sync(() => { ran = true }), { schema: Payload })
      expect(ran).toBe(false)
      expect(stats.deadLettered).toBe(1)
      const [entry] = settled
      expect(entry?.kind).toBe("deadLetter")
      if (entry?.kind === "deadLetter") {
        expect(entry.reason.category).toBe("schema")
        expect(entry.reason.error.tag).toBe("EnvelopeDecodeError")
      }
    }))

  it.effect("permanent failures are dead-lettered with their category; transient ones are nacked with backoff", () =>
    Effect.gen(function*() {
      const { stream, settled } = source([
        yield* message("auth", "k1", 1),
        yield* message("busy", "k2", 2, 2),
        yield* message("slow-down", "k3", 3),
        yield* message("exhausted", "k4", 4, 5)
      ])
      const handler: Handler.Handler<{ n: number }, Flaky> = (e) => {
        switch (e.id) {
          case "auth":
            return Effect.fail(new Flaky({ status: 401 }))
          case "slow-down":
            return Effect.fail(new Flaky({ status: 429, retryAfter: 60_000 }))
          default:
            return Effect.fail(new Flaky({ status: 503 }))
        }
      }
      yield* Pipeline.run(stream, handler, { schema: Payload, concurrency: 1, maxAttempts: 5 })
      const byId = Object.fromEntries(settled.map((s) => [s.id, s]))
      expect(byId.auth).toMatchObject({ kind: "deadLetter", reason: { category: "auth", attempts: 1 } })
      expect(byId.busy).toEqual({ kind: "nack", id: "busy", delay: 400 })
      expect(byId["slow-down"]).toEqual({ kind: "nack", id: "slow-down", delay: 60_000 })
      expect(byId.exhausted).toMatchObject({ kind: "deadLetter", reason: { category: "dependency", attempts: 5 } })
    }))

  it.effect("a defect in the handler is a transient failure, not a crash of the pipeline", () =>
    Effect.gen(function*() {
      const { stream, settled } = source([yield* message("d", "k", 1), yield* message("ok", "k", 2)])
      yield* Pipeline.run(stream, (e) => e.id === "d" ? Effect.die(new Error("bug")) : Effect.void, { schema: Payload })
      expect(settled.map((s) => s.kind).sort()).toEqual(["ack", "nack"])
    }))

  it.effect("a failing settle is logged and counted; the pipeline keeps going", () =>
    Effect.gen(function*() {
      const m = yield* message("x", "k", 1)
      const broken: Delivery.Delivery = {
        message: { id: "x", topic: "t", key: "k", payload: m.payload, headers: {} },
        attempt: 1,
        ack: Effect.fail(new Delivery.DeliveryError({ operation: "ack", messageId: "x", cause: "broker gone" })),
        nack: () => Effect.void,
        deadLetter: () => Effect.void
      }
      const { stream, settled } = source([yield* message("y", "k2", 2)])
      const stats = yield* Pipeline.run(Stream.concat(Stream.make(broken), stream), () => Effect.void, { schema: Payload })
      expect(stats.settleFailed).toBe(1)
      expect(settled).toEqual([{ kind: "ack", id: "y" }])
    }))

  it.effect("rejects a middleware stack in the wrong order before consuming anything", () =>
    Effect.gen(function*() {
      const { stream, settled } = source([yield* message("a", "k", 1)])
      const retry = <A, E, R>(h: Handler.Handler<A, E, R>) => Handler.withStage("retry", h, (e: Envelope.Envelope<A>) => h(e))
      const dlq = <A, E, R>(h: Handler.Handler<A, E, R>) => Handler.withStage("deadLetter", h, (e: Envelope.Envelope<A>) => h(e))
      const error = yield* Effect.flip(Pipeline.run(stream, pipe((_: Envelope.Envelope<{ n: number }>) => Effect.void, dlq, retry), { schema: Payload }))
      expect(error._tag).toBe("MiddlewareOrderError")
      expect(settled).toEqual([])
    }))

  it.effect.prop(
    "property: never more than `concurrency` in flight, and with orderBy subject one per subject, in arrival order",
    {
      keys: fc.array(fc.constantFrom("a", "b", "c", "d"), { minLength: 1, maxLength: 30 }),
      durations: fc.array(fc.integer({ min: 0, max: 50 }), { minLength: 30, maxLength: 30 }),
      concurrency: fc.integer({ min: 1, max: 5 }),
      ordered: fc.boolean()
    },
    ({ keys, durations, concurrency, ordered }) =>
      Effect.gen(function*() {
        const messages = yield* Effect.forEach(keys, (key, i) => message(`m${i}`, key, i))
        const { stream, settled } = source(messages)
        let inFlight = 0
        let maxInFlight = 0
        const busyKeys = new Set<string>()
        const startOrder: Record<string, Array<number>> = {}
        const handler: Handler.Handler<{ n: number }> = (e) =>
          Effect.gen(function*() {
            inFlight++
            maxInFlight = Math.max(maxInFlight, inFlight)
            if (ordered) {
              expect(busyKeys.has(e.subject)).toBe(false)
              busyKeys.add(e.subject)
            }
            ;(startOrder[e.subject] ??= []).push(e.data.n)
            yield* Effect.sleep(Duration.millis(durations[e.data.n]!))
            busyKeys.delete(e.subject)
            inFlight--
          })
        const fiber = yield* Effect.fork(
          Pipeline.run(stream, handler, { schema: Payload, concurrency, orderBy: ordered ? "subject" : "none", buffer: 3 })
        )
        while (fiber.unsafePoll() === null) yield* TestClock.adjust("10 millis")
        yield* Fiber.join(fiber)
        expect(maxInFlight).toBeLessThanOrEqual(concurrency)
        expect(settled.filter((s) => s.kind === "ack")).toHaveLength(keys.length)
        if (ordered) {
          for (const list of Object.values(startOrder)) expect(list).toEqual([...list].sort((x, y) => x - y))
        }
      }),
    { fastCheck: { numRuns: 60 } }
  )

  it.effect("graceful shutdown: stops taking, lets in-flight work finish, releases what cannot", () =>
    Effect.gen(function*() {
      const messages = yield* Effect.forEach(["quick", "slow", "parked", "later"], (id, i) =>
        message(id, id === "parked" ? "quick" : id, i))
      const settled: Array<Settlement> = []
      const { stream } = source(messages)
      const recorded = Stream.map(stream, (d): Delivery.Delivery => ({
        ...d,
        ack: Effect.sync(() => void settled.push({ kind: "ack", id: d.message.id })),
        nack: (o) => Effect.sync(() => void settled.push({ kind: "nack", id: d.message.id, delay: o?.delay ? 1 : 0 }))
      }))
      // "later" never arrives before shutdown: the source blocks after three deliveries.
      const blocking = Stream.concat(Stream.take(recorded, 3), Stream.never)
      const handler: Handler.Handler<{ n: number }> = (e) =>
        e.id === "quick" ? Effect.sleep("1 second") : e.id === "slow" ? Effect.sleep("1 hour") : Effect.void
      const fiber = yield* Effect.fork(
        Pipeline.run(blocking, handler, { schema: Payload, concurrency: 4, orderBy: "subject", shutdownTimeout: "5 seconds" })
      )
      yield* TestClock.adjust("10 millis")
      const interrupting = yield* Effect.fork(Fiber.interrupt(fiber))
      yield* TestClock.adjust("1 second")
      yield* TestClock.adjust("5 seconds")
      yield* Fiber.join(interrupting)
      const kinds = Object.fromEntries(settled.map((s) => [s.id, s.kind]))
      // In flight and quick: finished and acked. Parked behind it: released untouched. Too slow: interrupted, released.
      expect(kinds).toEqual({ quick: "ack", parked: "nack", slow: "nack" })
    }))

  it.effect("ordered: a broken source gives a key's deliveries back in order, the one in flight before those parked behind it", () =>
    Effect.gen(function*() {
      // Issue 17 (found by the chaos suite): shutdown released the parked "second" at once and the in-flight
      // "first" only when its handler was interrupted, so the transport redelivered "second" before "first".
      const messages = yield* Effect.forEach(["first", "second"], (id, i) => message(id, "k", i))
      const settled: Array<Settlement> = []
      const { stream } = source(messages)
      const recorded = Stream.map(stream, (d): Delivery.Delivery => ({
        ...d,
        ack: Effect.sync(() => void settled.push({ kind: "ack", id: d.message.id })),
        nack: () => Effect.sync(() => void settled.push({ kind: "nack", id: d.message.id, delay: 0 }))
      }))
      // The subscription breaks (a broker restart) while "first" is still being handled.
      const breaking = Stream.concat(recorded, Stream.fromEffect(Effect.zipRight(Effect.sleep("10 millis"), Effect.fail("broken"))))
      const handler: Handler.Handler<{ n: number }> = (e) => e.id === "first" ? Effect.sleep("1 hour") : Effect.void
      const fiber = yield* Effect.fork(
        Pipeline.run(breaking, handler, { schema: Payload, concurrency: 4, orderBy: "subject", shutdownTimeout: "5 seconds" })
      )
      yield* TestClock.adjust("10 millis")
      yield* TestClock.adjust("5 seconds")
      yield* Fiber.await(fiber)
      expect(settled).toEqual([{ kind: "nack", id: "first", delay: 0 }, { kind: "nack", id: "second", delay: 0 }])
    }))

  it.effect("onSettled observes every settlement with its verdict", () =>
    Effect.gen(function*() {
      const { stream } = source([yield* message("p", "k", 1)])
      const seen: Array<Pipeline.Settled> = []
      yield* Pipeline.run(stream, () => Effect.fail(new Failure.PermanentError({ category: "schema", message: "no" })), {
        schema: Payload,
        onSettled: (s) => Effect.sync(() => void seen.push(s))
      })
      expect(seen).toHaveLength(1)
      expect(seen[0]).toMatchObject({ outcome: "dead-lettered", verdict: { classification: "permanent", category: "schema" } })
    }))

  it.effect("emits one pipeline settled event per settlement, with the category of a failure", () =>
    Effect.gen(function*() {
      const { stream } = source([yield* message("ok", "k", 1), yield* message("bad", "k", 2, 4), yield* message("flaky", "j", 3)])
      const events: Array<Observe.Event> = []
      const handler = (e: Envelope.Envelope<{ readonly n: number }>): Effect.Effect<void, Failure.PermanentError | Flaky> =>
        e.data.n === 1
          ? Effect.void
          : e.data.n === 2
          ? Effect.fail(new Failure.PermanentError({ category: "auth", message: "no" }))
          : Effect.fail(new Flaky({ status: 503 }))
      yield* Pipeline.run(stream, handler, { schema: Payload, concurrency: 1 }).pipe(
        Observe.observe((event) => void events.push(event))
      )
      expect(events).toEqual([
        { source: "pipeline", kind: "settled", attributes: { topic: "t", messageId: "ok", attempt: 1, outcome: "acked", category: undefined } },
        { source: "pipeline", kind: "settled", attributes: { topic: "t", messageId: "bad", attempt: 4, outcome: "dead-lettered", category: "auth" } },
        { source: "pipeline", kind: "settled", attributes: { topic: "t", messageId: "flaky", attempt: 1, outcome: "nacked", category: "dependency" } }
      ])
    }))
})
