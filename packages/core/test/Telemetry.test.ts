import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Metric, Option, Schema, Stream, type Tracer } from "effect"
import type * as Delivery from "../src/Delivery.js"
import * as Envelope from "../src/Envelope.js"
import * as Pipeline from "../src/Pipeline.js"
import * as Telemetry from "../src/Telemetry.js"
import * as TraceContext from "../src/TraceContext.js"

const Payload = Schema.Struct({ n: Schema.Int })
const encode = Envelope.encode(Payload)

const carried = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
const inEnvelope = "00-11111111111111111111111111111111-2222222222222222-01"

const delivery = (
  topic: string,
  headers: Record<string, string>,
  envelopeHeaders: Record<string, string> = {},
  attempt = 1
) =>
  Effect.map(
    Effect.flatMap(
      Envelope.make({ id: `m-${topic}`, type: "test.event", source: "/test", subject: "k", data: { n: 1 }, headers: envelopeHeaders }),
      encode
    ),
    (payload): Delivery.Delivery => ({
      message: { id: `m-${topic}`, topic, key: "k", payload, headers },
      attempt,
      ack: Effect.void,
      nack: () => Effect.void,
      deadLetter: () => Effect.void
    })
  )

/** The handler's current span, from the delivery's `process` span down. */
const spanSeen = (deliveries: ReadonlyArray<Delivery.Delivery>, options: { readonly system?: string; readonly group?: string } = {}) =>
  Effect.gen(function*() {
    const spans: Array<Tracer.Span> = []
    yield* Pipeline.run(
      Stream.fromIterable(deliveries),
      () => Effect.flatMap(Effect.currentSpan, (span) => Effect.sync(() => void spans.push(span))).pipe(Effect.orDie),
      { schema: Payload, ...options }
    )
    return spans
  })

const parentOf = (span: Tracer.Span) => Option.getOrThrow(span.parent)

describe("Pipeline spans", () => {
  it.effect("each delivery runs in a `process {topic}` consumer span continuing the transport headers' trace", () =>
    Effect.gen(function*() {
      const [span] = yield* spanSeen([yield* delivery("orders", { traceparent: carried }, { traceparent: inEnvelope })], {
        system: "nats",
        group: "billing"
      })
      expect(span!.name).toBe("process orders")
      expect(span!.kind).toBe("consumer")
      expect(span!.traceId).toBe("0af7651916cd43dd8448eb211c80319c")
      expect(parentOf(span!).spanId).toBe("b7ad6b7169203331")
      expect(Object.fromEntries(span!.attributes)).toMatchObject({
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.destination.name": "orders",
        "messaging.consumer.group.name": "billing",
        "messaging.message.id": "m-orders",
        "bulwark.delivery.attempt": 1
      })
    }))

  it.effect("falls back to the envelope's context, and starts a root span (not a child of the consumer's) without one", () =>
    Effect.gen(function*() {
      const [fromEnvelope] = yield* spanSeen([yield* delivery("a", {}, { traceparent: inEnvelope })])
      expect(fromEnvelope!.traceId).toBe("11111111111111111111111111111111")
      const [root] = yield* spanSeen([yield* delivery("b", {})]).pipe(Effect.withSpan("consumer-loop"))
      expect(Option.isNone(root!.parent)).toBe(true)
    }))

  it.effect("records the settlement on the span and times the delivery in seconds, by outcome", () =>
    Effect.gen(function*() {
      const before = (yield* Metric.value(Telemetry.handlerDuration.pipe(Metric.tagged("destination", "timed"), Metric.tagged("outcome", "success")))).count
      const spans = yield* spanSeen([yield* delivery("timed", {})])
      // The span is still open while the handler runs; the outcome lands on it when the delivery settles.
      expect(spans).toHaveLength(1)
      const after = (yield* Metric.value(Telemetry.handlerDuration.pipe(Metric.tagged("destination", "timed"), Metric.tagged("outcome", "success")))).count
      expect(after - before).toBe(1)
      const received = yield* Metric.value(Telemetry.eventsReceived.pipe(Metric.tagged("stage", "consume"), Metric.tagged("destination", "timed")))
      expect(received.count).toBeGreaterThanOrEqual(1)
    }))

  it.effect("a dead-lettered delivery counts once in bulwark_dead_lettered_total", () =>
    Effect.gen(function*() {
      const counter = Telemetry.deadLettered.pipe(Metric.tagged("destination", "dl-once"), Metric.tagged("category", "schema"))
      const before = (yield* Metric.value(counter)).count
      const junk: Delivery.Delivery = {
        message: { id: "junk", topic: "dl-once", key: "", payload: new TextEncoder().encode("{nope"), headers: {} },
        attempt: 1,
        ack: Effect.void,
        nack: () => Effect.void,
        deadLetter: () => Effect.void
      }
      yield* Pipeline.run(Stream.make(junk), () => Effect.void, { schema: Payload })
      expect((yield* Metric.value(counter)).count - before).toBe(1)
    }))
})

describe("Telemetry.withSafeSpan", () => {
  it.effect("records a failure by its type only and hands the caller the original error", () =>
    Effect.gen(function*() {
      let seen: Tracer.Span | undefined
      const error = yield* Effect.flip(
        Effect.flatMap(Effect.orDie(Effect.currentSpan), (span) => {
          seen = span
          return Effect.fail({ _tag: "CardDeclined", detail: "card 4242 declined" } as const)
        }).pipe(Telemetry.withSafeSpan("charge"))
      )
      expect(error.detail).toBe("card 4242 declined")
      expect(seen!.attributes.get("error.type")).toBe("CardDeclined")
      const status = seen!.status
      expect(status._tag).toBe("Ended")
      // What a tracer renders of the failure (its exception event) is the type, not the message.
      if (status._tag === "Ended" && Exit.isFailure(status.exit)) {
        const rendered = Cause.pretty(status.exit.cause)
        expect(rendered).toContain("CardDeclined")
        expect(rendered).not.toContain("4242")
      }
    }))
})

describe("Telemetry.httpClientSpan", () => {
  it.effect("one client span per attempt, named after the method, with the traceparent to send", () =>
    Effect.gen(function*() {
      const [span, headers] = yield* Effect.all([Telemetry.currentSpan, TraceContext.currentHeaders]).pipe(
        Effect.tap(() => Telemetry.annotate({ [Telemetry.Attr.httpStatus]: 503 })),
        Telemetry.httpClientSpan({ method: "POST", serverAddress: "hooks.example.com", attempt: 3 })
      )
      const s = span as Tracer.Span
      expect(s.name).toBe("POST")
      expect(s.kind).toBe("client")
      expect(Object.fromEntries(s.attributes)).toEqual({
        "http.request.method": "POST",
        "server.address": "hooks.example.com",
        "http.request.resend_count": 2,
        "http.response.status_code": 503
      })
      expect(headers.traceparent).toBe(`00-${s.traceId}-${s.spanId}-01`)
    }))
})

describe("TraceContext", () => {
  it("stamps a context over a carried one and drops the carried tracestate", () => {
    expect(TraceContext.stamp({ a: "1", traceparent: carried, tracestate: "x=1" }, { traceparent: inEnvelope })).toEqual({
      a: "1",
      traceparent: inEnvelope
    })
    expect(TraceContext.stamp({ a: "1" }, {})).toEqual({ a: "1" })
  })
})
