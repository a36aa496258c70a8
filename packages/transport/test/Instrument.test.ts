import { describe, expect, it } from "@effect/vitest"
import { Delivery, Telemetry } from "@bulwark/core"
import { Effect, Metric, Option, type Tracer } from "effect"
import * as Transport from "../src/Transport.js"

const carried = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

/** A driver publish that records what it was handed and the span it ran in. */
const recorder = () => {
  const sent: Array<{ readonly topic: string; readonly messages: ReadonlyArray<Transport.OutgoingMessage>; readonly span: Tracer.Span }> = []
  const publish: Transport.Driver["publish"] = (topic, messages) =>
    Effect.flatMap(Effect.orDie(Effect.currentSpan), (span) => Effect.sync(() => void sent.push({ topic, messages, span })))
  return { sent, publish: Transport.tracePublish(publish, { system: "test" }) }
}

const message = (id: string, headers: Record<string, string> = {}): Transport.OutgoingMessage => ({
  id,
  key: "k",
  payload: new TextEncoder().encode(`{"not":"a cloudevent ${id}"}`),
  headers
})

describe("Transport.tracePublish", () => {
  it.effect("a `send {topic}` producer span whose context goes into the transport headers; the payload is untouched", () =>
    Effect.gen(function*() {
      const { publish, sent } = recorder()
      const original = message("m-1", { "x-kept": "yes" })
      yield* publish("orders", [original]).pipe(Effect.withSpan("checkout"))
      const [{ messages, span }] = sent as [typeof sent[number]]
      expect(span.name).toBe("send orders")
      expect(span.kind).toBe("producer")
      expect(Option.getOrThrow(span.parent)._tag === "Span" && (Option.getOrThrow(span.parent) as Tracer.Span).name).toBe("checkout")
      expect(messages[0]!.payload).toBe(original.payload)
      expect(messages[0]!.headers["x-kept"]).toBe("yes")
      expect(messages[0]!.headers.traceparent).toBe(`00-${span.traceId}-${span.spanId}-01`)
      expect(Object.fromEntries(span.attributes)).toMatchObject({
        "messaging.system": "test",
        "messaging.operation.type": "send",
        "messaging.destination.name": "orders",
        "messaging.message.id": "m-1"
      })
    }))

  it.effect("with no span around, a lone message's carried context is the parent (an outbox relay's publish)", () =>
    Effect.gen(function*() {
      const { publish, sent } = recorder()
      yield* publish("orders", [message("m-1", { traceparent: carried })])
      const [{ messages, span }] = sent as [typeof sent[number]]
      expect(span.traceId).toBe("0af7651916cd43dd8448eb211c80319c")
      expect(Option.getOrThrow(span.parent).spanId).toBe("b7ad6b7169203331")
      // Same trace: the send span's own context replaces the carried one, so the consumer is its child.
      expect(messages[0]!.headers.traceparent).toBe(`00-${span.traceId}-${span.spanId}-01`)
    }))

  it.effect("messages carrying other traces are forwarded untouched and linked (a relay batch)", () =>
    Effect.gen(function*() {
      const { publish, sent } = recorder()
      const other = "00-11111111111111111111111111111111-2222222222222222-01"
      const batch = [message("m-1", { traceparent: carried }), message("m-2", { traceparent: other }), message("m-3")]
      yield* publish("orders", batch)
      const [{ messages, span }] = sent as [typeof sent[number]]
      expect(Option.isNone(span.parent)).toBe(true)
      expect(span.links.map((l) => l.span.spanId).sort()).toEqual(["2222222222222222", "b7ad6b7169203331"])
      expect(messages[0]!.headers.traceparent).toBe(carried)
      expect(messages[1]!.headers.traceparent).toBe(other)
      // The one without a context gets the send span's.
      expect(messages[2]!.headers.traceparent).toBe(`00-${span.traceId}-${span.spanId}-01`)
      expect(span.attributes.get("messaging.batch.message_count")).toBe(3)
    }))

  it.effect("a dead-letter copy published by hand (an outbox relay's dead row) counts once as dead-lettered", () =>
    Effect.gen(function*() {
      const { publish } = recorder()
      const counter = Telemetry.deadLettered.pipe(Metric.tagged("destination", "shipments"), Metric.tagged("category", "dependency"))
      const before = (yield* Metric.value(counter)).count
      yield* publish("shipments.dlq", [message("m-1", {
        [Delivery.DeadLetterHeaders.category]: "dependency",
        [Delivery.DeadLetterHeaders.originTopic]: "shipments"
      })])
      yield* publish("shipments", [message("m-2")])
      expect((yield* Metric.value(counter)).count - before).toBe(1)
    }))
})
