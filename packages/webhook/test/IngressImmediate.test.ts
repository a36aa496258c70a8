import { Observe, Telemetry, TraceContext } from "@bulwark/core"
import { Memory, Transport } from "@bulwark/transport"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Layer, Metric, Option, Schema, Stream, Tracer } from "effect"
import * as Ingress from "../src/Ingress.js"
import * as ReplayGuard from "../src/ReplayGuard.js"
import * as Signing from "../src/Signing.js"
import * as Verifier from "../src/Verifier.js"

const secret = Signing.generateSecret()
const Order = Schema.Struct({ type: Schema.String, data: Schema.Struct({ orderId: Schema.String }) })
const body = new TextEncoder().encode(JSON.stringify({ type: "order.paid", data: { orderId: "ord_1" } }))

/** The memory replay guard without its immediate operations: every request takes the effect path. */
const guardWithoutImmediate = Layer.effect(
  ReplayGuard.ReplayGuard,
  Effect.map(ReplayGuard.makeMemory(), ({ claim, commit, release }) => ({ claim, commit, release }))
)

/** A tracer that keeps every span it makes (Effect's own spans underneath). */
const recordingTracer = Effect.map(Effect.tracer, (native) => {
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind, options) => {
      const span = native.span(name, parent, context, links, startTime, kind, options)
      spans.push(span)
      return span
    },
    context: native.context
  })
  return { spans, tracer }
})

const counter = (metric: Metric.Metric.Counter<number>) => Effect.map(Metric.value(metric), (state) => state.count)

/** The ingress of one source's orders to `topic`, with its received and duplicates counters. */
const orderIngress = (topic: string) => ({
  process: Ingress.process({
    verifier: Verifier.standard([secret], { source: "shop" }),
    schema: Order,
    topic,
    type: "com.example.order",
    subject: (order) => order.data.orderId
  }),
  received: Metric.tagged(Metric.tagged(Telemetry.eventsReceived, "stage", "webhook"), "destination", topic),
  duplicates: Metric.tagged(Telemetry.duplicatesSuppressed, "stage", "webhook")
})

/** One source's ingress run over `guard`: the spans, events, counters and the message the consumer got. */
const runOnce = (topic: string, guard: Layer.Layer<ReplayGuard.ReplayGuard>) =>
  Effect.gen(function*() {
    const { spans, tracer } = yield* recordingTracer
    const events: Array<Observe.Event> = []
    const { duplicates, process, received } = orderIngress(topic)
    const published = Metric.tagged(Metric.tagged(Telemetry.publishDuration, "destination", topic), "outcome", "success")
    const before = { received: yield* counter(received), duplicates: yield* counter(duplicates) }
    const publishedBefore = (yield* Metric.value(published)).count
    const headers = { ...(yield* Signing.standard([secret], { id: "msg_1", body })) }
    const result = yield* Effect.gen(function*() {
      const first = yield* process({ headers, body })
      const again = yield* process({ headers, body })
      const delivery = yield* Effect.flatMap(Transport.Subscriber, (s) => Stream.runHead(s.subscribe(topic)))
      return { first, again, delivery: Option.getOrThrow(delivery) }
    }).pipe(
      Observe.observe((event) => void events.push(event)),
      Effect.withTracer(tracer),
      Effect.provide(Layer.merge(Memory.layer(), guard))
    )
    return {
      ...result,
      spans,
      events,
      received: (yield* counter(received)) - before.received,
      duplicates: (yield* counter(duplicates)) - before.duplicates,
      published: (yield* Metric.value(published)).count - publishedBefore
    }
  })

/** What must match between the two paths: names, kinds, parents, attributes, ended and successful. */
const shape = (spans: ReadonlyArray<Tracer.Span>) =>
  spans.map((span) => ({
    name: span.name,
    kind: span.kind,
    parent: Option.match(span.parent, { onNone: () => undefined, onSome: (p) => spans.find((s) => s.spanId === p.spanId)?.name }),
    sameTrace: Option.match(span.parent, { onNone: () => true, onSome: (p) => p.traceId === span.traceId }),
    attributes: Object.fromEntries(span.attributes),
    status: span.status._tag === "Ended" ? span.status.exit._tag : "not ended"
  }))

describe("Ingress immediate path", () => {
  it.effect("with the memory guard and transport it makes the spans, events, metrics and message the effect path makes", () =>
    Effect.gen(function*() {
      const immediate = yield* runOnce("shop.immediate", ReplayGuard.layerMemory())
      const viaEffects = yield* runOnce("shop.effects", guardWithoutImmediate)

      for (const run of [immediate, viaEffects]) {
        expect(run.first).toEqual({ id: "msg_1", duplicate: false })
        expect(run.again).toEqual({ id: "msg_1", duplicate: true })
        expect([run.received, run.duplicates, run.published]).toEqual([1, 1, 1])
        // The consumer continues the trace of the `send` span, itself a child of the receive span.
        const send = run.spans.find((s) => s.name.startsWith("send "))!
        const carried = Option.getOrThrow(TraceContext.extract(run.delivery.message.headers))
        expect([carried.traceId, carried.spanId]).toEqual([send.traceId, send.spanId])
      }
      const normalise = (run: typeof immediate) =>
        shape(run.spans).map((s) => ({
          ...s,
          name: s.name.replace(/shop\.(immediate|effects)/, "shop.topic"),
          attributes: Object.fromEntries(
            Object.entries(s.attributes).map(([k, v]) => [k, typeof v === "string" ? v.replace(/shop\.(immediate|effects)/, "shop.topic") : v])
          )
        }))
      expect(normalise(immediate)).toEqual(normalise(viaEffects))
      expect(normalise(immediate).map((s) => [s.name, s.parent])).toEqual([
        ["webhook.receive shop", undefined],
        ["webhook.verify", "webhook.receive shop"],
        ["send shop.topic", "webhook.receive shop"],
        ["webhook.receive shop", undefined],
        ["webhook.verify", "webhook.receive shop"]
      ])
      const events = (run: typeof immediate) =>
        run.events.map((e) => ({ ...e, attributes: { ...e.attributes, topic: e.attributes.topic === undefined ? undefined : "t" } }))
      expect(events(immediate)).toEqual(events(viaEffects))
      expect(immediate.events.map((e) => e.kind)).toEqual(["verified", "accepted", "verified", "accepted"])
      expect(Chunk.size(Chunk.fromIterable(immediate.spans))).toBe(5)
    }))
})

describe("Ingress immediate path with no tracer installed", () => {
  // Without a tracer the receive and verify spans are not made; what can be seen must not change: events,
  // counters, and a message whose trace context continues the trace the request was received in.
  const untraced = (topic: string, guard: Layer.Layer<ReplayGuard.ReplayGuard>) =>
    Effect.gen(function*() {
      const events: Array<Observe.Event> = []
      const { duplicates, process, received } = orderIngress(topic)
      const before = { received: yield* counter(received), duplicates: yield* counter(duplicates) }
      const headers = { ...(yield* Signing.standard([secret], { id: "msg_1", body })) }
      const result = yield* Effect.gen(function*() {
        const parent = yield* Effect.currentSpan
        const first = yield* process({ headers, body })
        const again = yield* process({ headers, body })
        const delivery = yield* Effect.flatMap(Transport.Subscriber, (s) => Stream.runHead(s.subscribe(topic)))
        return { parent, first, again, delivery: Option.getOrThrow(delivery) }
      }).pipe(
        Effect.withSpan("caller"),
        Observe.observe((event) => void events.push(event)),
        Effect.provide(Layer.merge(Memory.layer(), guard))
      )
      return {
        ...result,
        events,
        received: (yield* counter(received)) - before.received,
        duplicates: (yield* counter(duplicates)) - before.duplicates
      }
    })

  it.effect("answers, announces, counts and stamps the message as the effect path does", () =>
    Effect.gen(function*() {
      const immediate = yield* untraced("shop.untraced.immediate", ReplayGuard.layerMemory())
      const viaEffects = yield* untraced("shop.untraced.effects", guardWithoutImmediate)
      for (const run of [immediate, viaEffects]) {
        expect(run.first).toEqual({ id: "msg_1", duplicate: false })
        expect(run.again).toEqual({ id: "msg_1", duplicate: true })
        expect([run.received, run.duplicates]).toEqual([1, 1])
        const carried = Option.getOrThrow(TraceContext.extract(run.delivery.message.headers))
        expect(carried.traceId).toBe(run.parent.traceId)
        expect(carried.spanId).not.toBe(run.parent.spanId)
      }
      const events = (run: typeof immediate) =>
        run.events.map((e) => ({ ...e, attributes: { ...e.attributes, topic: e.attributes.topic === undefined ? undefined : "t" } }))
      expect(events(immediate)).toEqual(events(viaEffects))
      expect(immediate.events.map((e) => e.kind)).toEqual(["verified", "accepted", "verified", "accepted"])
    }))
})

describe("Ingress immediate path when the topic is full", () => {
  // The publisher has no room now: the request waits for it as effects, then is accepted like any other.
  const fullTopic = (traced: boolean) =>
    Effect.gen(function*() {
      const { spans, tracer } = yield* recordingTracer
      const topic = traced ? "shop.full.traced" : "shop.full.untraced"
      const process = Ingress.process({
        verifier: Verifier.standard([secret], { source: "shop" }),
        schema: Order,
        topic,
        type: "com.example.order",
        subject: (order) => order.data.orderId
      })
      const signed = (id: string) => Effect.map(Signing.standard([secret], { id, body }), (headers) => ({ headers: { ...headers }, body }))
      const first = yield* signed("msg_full_1")
      const second = yield* signed("msg_full_2")
      const run = Effect.gen(function*() {
        const accepted = yield* process(first)
        const waiting = yield* Effect.fork(process(second))
        yield* Effect.yieldNow()
        const blocked = Option.isNone(yield* waiting.poll)
        const delivered = yield* Effect.flatMap(Transport.Subscriber, (s) =>
          Stream.runCollect(Stream.take(Stream.mapEffect(s.subscribe(topic), (d) => Effect.as(d.ack, d.message)), 2)))
        return { accepted, blocked, later: yield* waiting.await, delivered: Chunk.toArray(delivered) }
      }).pipe(Effect.provide(Layer.merge(Memory.layer({ capacity: 1 }), ReplayGuard.layerMemory())))
      const result = yield* (traced ? Effect.withTracer(run, tracer) : run)
      return { ...result, spans }
    })

  it.effect("waits for room, then accepts, with or without a tracer", () =>
    Effect.gen(function*() {
      for (const traced of [false, true]) {
        const { accepted, blocked, later, delivered, spans } = yield* fullTopic(traced)
        expect(accepted).toEqual({ id: "msg_full_1", duplicate: false })
        expect(blocked).toBe(true)
        expect(later._tag === "Success" && later.value).toEqual({ id: "msg_full_2", duplicate: false })
        expect(delivered.map((m) => m.id)).toEqual(["msg_full_1", "msg_full_2"])
        for (const message of delivered) expect(Option.isSome(TraceContext.extract(message.headers))).toBe(true)
        if (traced) {
          // The waiting request's send span is still a child of its receive span.
          const receives = spans.filter((s) => s.name === "webhook.receive shop")
          const sends = spans.filter((s) => s.name.startsWith("send "))
          expect([receives.length, sends.length]).toEqual([2, 2])
          for (const send of sends) {
            expect(receives.some((r) => Option.isSome(send.parent) && send.parent.value.spanId === r.spanId)).toBe(true)
          }
        } else expect(spans).toEqual([])
      }
    }))
})
