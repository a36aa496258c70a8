import { describe, expect, it } from "@effect/vitest"
import * as OtelApi from "@opentelemetry/api"
import { tracing } from "@opentelemetry/sdk-node"
import { Deferred, Effect, Fiber } from "effect"
import * as Otel from "../src/Otel.js"

/** What an auto-instrumented library does on a call: a span under whatever OpenTelemetry context is active. */
const libraryCall = (name: string) =>
  new Promise<void>((resolve) => {
    const span = OtelApi.trace.getTracer("some-library").startSpan(name)
    setTimeout(() => {
      span.end()
      resolve()
    }, 5)
  })

const telemetry = (bridgeContext?: boolean) => {
  const exporter = new tracing.InMemorySpanExporter()
  const processor = new tracing.SimpleSpanProcessor(exporter)
  const layer = Otel.layer({
    serviceName: "bridge-test",
    spanProcessors: [processor],
    metricExporters: [],
    ...(bridgeContext === undefined ? {} : { bridgeContext })
  })
  const spans = Effect.suspend(() => Effect.promise(() => processor.forceFlush())).pipe(Effect.map(() => exporter.getFinishedSpans()))
  return { layer, spans }
}

describe("Otel context bridge", () => {
  it.live("plain OpenTelemetry instrumentations called from an Effect span are its children", () => {
    const { layer, spans } = telemetry()
    return Effect.gen(function*() {
      yield* Effect.promise(() => libraryCall("pg.query")).pipe(Effect.withSpan("handler"))
      const finished = yield* spans
      const handler = finished.find((s) => s.name === "handler")!
      const query = finished.find((s) => s.name === "pg.query")!
      expect(query.spanContext().traceId).toBe(handler.spanContext().traceId)
      expect(query.parentSpanContext?.spanId).toBe(handler.spanContext().spanId)
    }).pipe(Effect.provide(layer), Effect.scoped)
  })

  it.live("the parent does not leak into a fiber without a span that a traced call's promise woke up", () => {
    const { layer, spans } = telemetry()
    return Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      // A fiber without a span waits; it is woken by a promise resolved inside the handler's context.
      const idle = yield* Effect.fork(
        Effect.zipRight(Deferred.await(gate), Effect.promise(() => libraryCall("relay.query")).pipe(Effect.withSpan("relay.round")))
      )
      yield* Effect.promise(() => libraryCall("pg.query").then(() => Effect.runPromise(Deferred.succeed(gate, undefined))))
        .pipe(Effect.withSpan("handler"))
      yield* Fiber.join(idle)
      const finished = yield* spans
      const handler = finished.find((s) => s.name === "handler")!
      const round = finished.find((s) => s.name === "relay.round")!
      const relayQuery = finished.find((s) => s.name === "relay.query")!
      expect(round.spanContext().traceId).not.toBe(handler.spanContext().traceId)
      expect(round.parentSpanContext).toBeUndefined()
      expect(relayQuery.parentSpanContext?.spanId).toBe(round.spanContext().spanId)
    }).pipe(Effect.provide(layer), Effect.scoped)
  })

  it.live("bridgeContext: false registers no context manager: library spans start their own traces", () => {
    const { layer, spans } = telemetry(false)
    return Effect.gen(function*() {
      yield* Effect.promise(() => libraryCall("pg.query")).pipe(Effect.withSpan("handler"))
      const finished = yield* spans
      const handler = finished.find((s) => s.name === "handler")!
      const query = finished.find((s) => s.name === "pg.query")!
      expect(query.spanContext().traceId).not.toBe(handler.spanContext().traceId)
    }).pipe(Effect.provide(layer), Effect.scoped)
  })
})
