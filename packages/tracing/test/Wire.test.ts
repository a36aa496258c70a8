import { Envelope, Pipeline } from "@bulwark/core"
import * as Memory from "@bulwark/transport/Transport/Memory"
import * as Transport from "@bulwark/transport/Transport"
import { describe, expect, it } from "@effect/vitest"
// The official OTLP protobuf definitions, as compiled by the OpenTelemetry JS project.
import * as root from "@opentelemetry/otlp-transformer/build/src/generated/root.js"
import { createServer, type IncomingMessage } from "node:http"
import type { AddressInfo } from "node:net"
import { Effect, Layer, Logger, Metric, Option, Schema, Stream } from "effect"
import * as Otel from "../src/Otel.js"
import * as Propagation from "../src/Propagation.js"

interface Received {
  readonly path: string
  readonly contentType: string
  readonly body: Buffer
}

/** An OTLP/HTTP receiver on 127.0.0.1 that keeps every request and answers 200 with an empty response. */
const receiver = Effect.acquireRelease(
  Effect.async<{ readonly url: string; readonly received: Array<Received> }>((resume) => {
    const received: Array<Received> = []
    const server = createServer((request: IncomingMessage, response) => {
      const chunks: Array<Buffer> = []
      request.on("data", (chunk: Buffer) => chunks.push(chunk))
      request.on("end", () => {
        received.push({
          path: request.url ?? "",
          contentType: request.headers["content-type"] ?? "",
          body: Buffer.concat(chunks)
        })
        response.writeHead(200, { "content-type": "application/x-protobuf" })
        response.end()
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo
      resume(Effect.succeed(Object.assign({ url: `http://127.0.0.1:${port}`, received }, { server })))
    })
  }),
  (r) => Effect.async<void>((resume) => void (r as unknown as { server: ReturnType<typeof createServer> }).server.close(() => resume(Effect.void)))
)

const proto = (root as unknown as { default?: unknown }).default ?? root
const otlp = (proto as any).opentelemetry.proto
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")
const attr = (attributes: ReadonlyArray<any>, key: string) => {
  const value = attributes.find((a) => a.key === key)?.value
  return value?.stringValue ?? value?.intValue?.toString() ?? value?.boolValue ?? value?.doubleValue
}

const Order = Schema.Struct({ id: Schema.String })

const otelEnv = (url: string): Record<string, string> => ({
  OTEL_EXPORTER_OTLP_ENDPOINT: url,
  OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
  OTEL_TRACES_EXPORTER: "otlp",
  OTEL_METRICS_EXPORTER: "otlp",
  OTEL_LOGS_EXPORTER: "none",
  OTEL_SERVICE_NAME: "bulwark-wire-test",
  OTEL_NODE_RESOURCE_DETECTORS: "env"
})

const withEnv = (vars: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const previous = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]))
      Object.assign(process.env, vars)
      return previous
    }),
    (previous) =>
      Effect.sync(() => {
        for (const [k, v] of Object.entries(previous)) {
          if (v === undefined) delete process.env[k]
          else process.env[k] = v
        }
      })
  )

describe("OTLP over the wire", () => {
  it.live("layerConfig exports the trace and the metrics to an OTLP/HTTP endpoint from OTEL_* variables", () =>
    Effect.gen(function*() {
      const { url, received } = yield* receiver
      let traceparent = ""
      // The SDK's scope: closing it flushes the batch span processor and the metric reader.
      yield* Effect.scoped(Effect.gen(function*() {
        yield* withEnv(otelEnv(url))
        const run = Effect.gen(function*() {
          const publish = Transport.publishEnvelopes(Order)
          const order = yield* Envelope.make({ id: "order_1", type: "com.acme.order", source: "/shop", subject: "o1", data: { id: "o1" } })
          yield* publish("orders", [order]).pipe(Effect.withSpan("checkout"))
          const subscriber = yield* Transport.Subscriber
          const handler = (_: Envelope.Envelope<typeof Order.Type>) =>
            Effect.map(Propagation.currentHeaders, (headers) => void (traceparent = headers.traceparent ?? ""))
          yield* Pipeline.run(subscriber.subscribe("orders").pipe(Stream.take(1)), handler, { schema: Order, system: "memory" })
          // Effect's runtime metrics exist in the process but are not exported by default.
          yield* Metric.increment(Metric.counter("effect_fiber_wire_test", { incremental: true }))
        })
        yield* run.pipe(Effect.provide(Layer.merge(Memory.layer(), Otel.layerConfig({ serviceName: "ignored-env-wins" }))))
      }))

      const traceId = traceparent.split("-")[1]!
      expect(traceId).toMatch(/^[0-9a-f]{32}$/)

      const traceRequests = received.filter((r) => r.path === "/v1/traces")
      expect(traceRequests.length).toBeGreaterThan(0)
      for (const r of traceRequests) expect(r.contentType).toBe("application/x-protobuf")
      const spans: Array<{ readonly name: string; readonly traceId: string; readonly parent: string; readonly id: string; readonly attributes: Array<any>; readonly service: string }> = []
      for (const r of traceRequests) {
        const request = otlp.collector.trace.v1.ExportTraceServiceRequest.decode(r.body)
        for (const resourceSpans of request.resourceSpans) {
          const service = attr(resourceSpans.resource.attributes, "service.name")
          for (const scopeSpans of resourceSpans.scopeSpans) {
            for (const span of scopeSpans.spans) {
              spans.push({
                name: span.name,
                traceId: hex(span.traceId),
                id: hex(span.spanId),
                parent: hex(span.parentSpanId ?? new Uint8Array()),
                attributes: span.attributes,
                service
              })
            }
          }
        }
      }
      const ofTrace = spans.filter((s) => s.traceId === traceId)
      expect(ofTrace.map((s) => s.name).sort()).toEqual(["checkout", "process orders", "send orders"])
      for (const s of ofTrace) expect(s.service).toBe("bulwark-wire-test")
      const byName = (name: string) => ofTrace.find((s) => s.name === name)!
      expect(byName("send orders").parent).toBe(byName("checkout").id)
      expect(byName("process orders").parent).toBe(byName("send orders").id)
      expect(traceparent.split("-")[2]).toBe(byName("process orders").id)
      expect(attr(byName("send orders").attributes, "messaging.system")).toBe("memory")
      expect(attr(byName("send orders").attributes, "messaging.operation.type")).toBe("send")
      expect(attr(byName("process orders").attributes, "messaging.destination.name")).toBe("orders")
      expect(attr(byName("process orders").attributes, "messaging.operation.type")).toBe("process")
      expect(attr(byName("process orders").attributes, "messaging.message.id")).toBe("order_1")

      // Effect's metrics went the same way, through the SDK's metric reader.
      const metricRequests = received.filter((r) => r.path === "/v1/metrics")
      expect(metricRequests.length).toBeGreaterThan(0)
      const metrics = new Map<string, any>()
      for (const r of metricRequests) {
        const request = otlp.collector.metrics.v1.ExportMetricsServiceRequest.decode(r.body)
        for (const rm of request.resourceMetrics) for (const sm of rm.scopeMetrics) for (const m of sm.metrics) metrics.set(m.name, m)
      }
      expect([...metrics.keys()]).toContain("bulwark_events_received_total")
      // Counters are monotonic cumulative sums, so a backend's rate() works.
      for (const [name, m] of metrics) {
        if (name.endsWith("_total")) {
          expect(m.sum, name).toBeTruthy()
          expect(m.sum.isMonotonic, name).toBe(true)
        }
      }
      // Durations are in seconds and say so.
      expect(metrics.get("bulwark_handler_duration_seconds").unit).toBe("s")
      expect(metrics.get("bulwark_handler_duration_seconds").histogram).toBeTruthy()
      expect(metrics.get("bulwark_publish_duration_seconds").unit).toBe("s")
      expect([...metrics.keys()].filter((name) => name.startsWith("effect_"))).toEqual([])
    }).pipe(Effect.scoped))

  it.live("layerConfig is a no-op without OTEL_* variables: no SDK, no export, Effect's own tracer", () =>
    Effect.gen(function*() {
      const { received } = yield* receiver
      const saved = Object.entries(process.env).filter(([k]) => k.startsWith("OTEL_"))
      yield* Effect.acquireRelease(
        Effect.sync(() => { for (const [k] of saved) delete process.env[k] }),
        () => Effect.sync(() => { for (const [k, v] of saved) process.env[k] = v })
      )
      expect(Otel.isConfigured(process.env)).toBe(false)
      const span = yield* Effect.scoped(Effect.provide(Effect.currentSpan.pipe(Effect.withSpan("quiet")), Otel.layerConfig()))
      // Effect's native span, not an OpenTelemetry one.
      expect(Object.getOwnPropertySymbols(span).map(String)).not.toContain("Symbol(@effect/opentelemetry/Tracer/OtelSpan)")
      expect(received).toEqual([])
      expect(Otel.isConfigured({ OTEL_SERVICE_NAME: "x", OTEL_SDK_DISABLED: "true" })).toBe(false)
      expect(Otel.isConfigured({ OTEL_SERVICE_NAME: "x" })).toBe(true)
    }).pipe(Effect.scoped))

  it.live("an exporter name the SDK does not know keeps valid trace ids for propagation, and says so", () =>
    Effect.gen(function*() {
      const saved = Object.entries(process.env).filter(([k]) => k.startsWith("OTEL_"))
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          for (const [k] of saved) delete process.env[k]
          process.env.OTEL_TRACES_EXPORTER = "jaeger"
          process.env.OTEL_METRICS_EXPORTER = "none"
        }),
        () =>
          Effect.sync(() => {
            delete process.env.OTEL_TRACES_EXPORTER
            delete process.env.OTEL_METRICS_EXPORTER
            for (const [k, v] of saved) process.env[k] = v
          })
      )
      const warnings: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") warnings.push(String(message))
      })
      const headers = yield* Effect.scoped(
        Effect.provide(Propagation.currentHeaders.pipe(Effect.withSpan("unexported")), Otel.layerConfig())
      ).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      // A valid (non-zero) traceparent is what lets the next service continue the trace.
      expect(Option.isSome(Propagation.parseTraceparent(headers.traceparent))).toBe(true)
      expect(warnings.join("\n")).toContain("jaeger")
    }).pipe(Effect.scoped))
})
