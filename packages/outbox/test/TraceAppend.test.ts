/** The append's `create {topic}` span and the W3C context it gives the rows, with and without a tracer installed. */
import { TraceContext } from "@bulwark/core"
import type { Transport } from "@bulwark/transport"
import { expect, it } from "@effect/vitest"
import { Effect, Option, Tracer } from "effect"
import * as Outbox from "../src/Outbox.js"

const encoder = new TextEncoder()
const raw = (id: string, headers: Record<string, string> = {}): Transport.OutgoingMessage => ({
  id,
  key: "k",
  payload: encoder.encode(id),
  headers
})
const carried = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

/** `traceAppend` over a store that keeps what it is given, with the parent span the store ran under. */
const capturing = () => {
  const written: Array<{ readonly messages: ReadonlyArray<Transport.OutgoingMessage>; readonly parent: string | undefined }> = []
  const append = Outbox.traceAppend((_topic, messages) =>
    Effect.map(Effect.option(Effect.currentParentSpan), (parent) => {
      written.push({ messages, parent: Option.getOrUndefined(Option.map(parent, (span) => span.spanId)) })
    })
  )
  return { written, append }
}
const traceOf = (message: Transport.OutgoingMessage) => Option.getOrThrow(TraceContext.parseTraceparent(message.headers.traceparent))

it.effect("without a tracer, rows carry the append span's context: a fresh trace, the ambient span's, or a lone message's carried one", () =>
  Effect.gen(function*() {
    const { written, append } = capturing()
    yield* append("orders", [raw("alone")])
    const fresh = traceOf(written[0]!.messages[0]!)
    expect(TraceContext.isValid(fresh)).toBe(true)

    const outer = yield* append("orders", [raw("inside")]).pipe(
      Effect.zipRight(Effect.currentSpan),
      Effect.withSpan("outer")
    )
    const inside = traceOf(written[1]!.messages[0]!)
    expect(inside.traceId).toBe(outer.traceId)
    // The append's own span, a child of the ambient one.
    expect(inside.spanId).not.toBe(outer.spanId)

    yield* append("orders", [raw("forwarded", { traceparent: carried })])
    const forwarded = traceOf(written[2]!.messages[0]!)
    expect(forwarded.traceId).toBe("0af7651916cd43dd8448eb211c80319c")
    expect(forwarded.spanId).not.toBe("b7ad6b7169203331")
    expect(fresh.traceId).not.toBe(inside.traceId)
  }))

it.effect("with a tracer, the create span is recorded with its attributes, the store runs under it, and it is the rows' parent", () =>
  Effect.gen(function*() {
    const { written, append } = capturing()
    const spans: Array<Tracer.Span> = []
    const native = yield* Effect.tracer
    const recording = Tracer.make({
      span: (name, parent, context, links, startTime, kind, options) => {
        const span = native.span(name, parent, context, links, startTime, kind, options)
        spans.push(span)
        return span
      },
      context: native.context
    })
    yield* append("orders", [raw("m-1")]).pipe(Effect.withTracer(recording))
    const create = spans.find((span) => span.name === "create orders")!
    expect(create.kind).toBe("producer")
    expect(create.attributes.get("messaging.message.id")).toBe("m-1")
    expect(create.attributes.get("messaging.destination.name")).toBe("orders")
    expect(create.status._tag).toBe("Ended")
    expect(written[0]!.parent).toBe(create.spanId)
    expect(traceOf(written[0]!.messages[0]!).spanId).toBe(create.spanId)
  }))
