/**
 * The flagship, as a user runs it: `npm start` with only `OTEL_*` set, exporting to an OTLP/HTTP receiver on
 * loopback. The export is decoded (OTLP/JSON, `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) and checked: every
 * accepted webhook is one connected trace from the ingress through the order handler and the outbox to the
 * shipping consumer, the relay's publish is linked to (or parented by) each append, replays link back to the
 * original trace, the messaging attributes are there, and the counters are monotonic.
 */
import { describe, expect, it } from "@effect/vitest"
import * as OtlpReceiver from "../src/OtlpReceiver.js"

type Span = OtlpReceiver.Receiver["spans"][number]
type Point = OtlpReceiver.Point

const server = 2
const consumer = 5

describe("the flagship exports one connected trace per webhook over OTLP", () => {
  it("with only OTEL_* set", async () => {
    const receiver = await OtlpReceiver.start()
    try {
      const run = await OtlpReceiver.runExample({
        PAYMENTS_WEBHOOKS: "60",
        PAYMENTS_PROGRESS: "off",
        PAYMENTS_OUTAGE_MS: "1500",
        ...OtlpReceiver.otelEnv(receiver)
      })
      expect(run.code, run.stderr).toBe(0)
      const spans = receiver.spans
      expect(receiver.requests.some((r) => r.startsWith("/v1/traces application/json"))).toBe(true)

      const byId = new Map(spans.map((s) => [s.spanId, s]))
      const byTrace = new Map<string, Array<Span>>()
      for (const s of spans) byTrace.set(s.traceId, [...(byTrace.get(s.traceId) ?? []), s])
      const depthOf = (span: Span): number => {
        let depth = 1
        let current = span
        while (current.parentSpanId !== "" && byId.has(current.parentSpanId)) {
          current = byId.get(current.parentSpanId)!
          depth++
        }
        return depth
      }
      // Publishes that link to a span (a relay round of several rows links to each row's append).
      const linkedFrom = new Map<string, Array<Span>>()
      for (const s of spans) for (const l of s.links) linkedFrom.set(l.spanId, [...(linkedFrom.get(l.spanId) ?? []), s])

      const receives = spans.filter((s) => s.name.startsWith("webhook.receive ") && s.attributes["bulwark.webhook.duplicate"] === false)
      // One server span per webhook the summary counts as accepted.
      const accepted = run.stdout.match(/accepted and persisted \(202\)\s+(\d+)/)
      expect(accepted, run.stdout).not.toBeNull()
      expect(receives.length).toBe(Number(accepted![1]))
      expect(receives.length).toBeGreaterThanOrEqual(40)

      let crossing = 0
      for (const receive of receives) {
        expect(receive.kind).toBe(server)
        expect(receive.parentSpanId).toBe("")
        const trace = byTrace.get(receive.traceId)!
        // Connected: every span of the trace but its root has its parent in the trace (no context lost).
        for (const s of trace) if (s !== receive) expect(byId.has(s.parentSpanId), `${s.name} lost its parent`).toBe(true)
        const names = new Set(trace.map((s) => s.name))
        expect(names).toContain("webhook.verify")
        expect(names).toContain("send payments")
        expect(names).toContain("process payments")
        const appends = trace.filter((s) => s.name === "create order-paid")
        if (appends.length === 0) continue
        expect(names).toContain("orders.mark-paid")
        // The relay's publish of each append: its child (one row) or linked to it (a batch).
        for (const append of appends) {
          const relayed = spans.some((s) => s.name === "send order-paid" && (s.parentSpanId === append.spanId || linkedFrom.get(append.spanId)?.includes(s)))
          expect(relayed, "relay publish of an append").toBe(true)
        }
        expect(names).toContain("process order-paid")
        expect(Math.max(...trace.map(depthOf))).toBeGreaterThanOrEqual(4)
        crossing++
      }
      // Every paid order went the whole way (the summary's count).
      const paid = run.stdout.match(/orders paid \(OrderPaid appended in the same tx\)\s+(\d+)/)
      expect(paid).not.toBeNull()
      expect(crossing).toBe(Number(paid![1]))

      // Shipping attempts (and their retries) are in the trace of the webhook that paid the order.
      const shipping = spans.filter((s) => s.name === "shipping.book")
      expect(shipping.length).toBeGreaterThan(0)
      for (const s of shipping) expect(byTrace.get(s.traceId)!.some((r) => r.name.startsWith("webhook.receive "))).toBe(true)

      // A replay is a root linked to the trace the entry failed in, which its consumer continues.
      const replays = spans.filter((s) => s.name === "dead_letter.replay order-paid")
      const replayed = run.stdout.match(/replayed after the outage \(dependency, timeout\)\s+(\d+)/)
      expect(replayed, run.stdout).not.toBeNull()
      expect(replays.length).toBe(Number(replayed![1]))
      for (const r of replays) {
        expect(r.links.length).toBe(1)
        expect(byTrace.get(r.links[0]!.traceId)!.some((s) => s.name.startsWith("webhook.receive "))).toBe(true)
      }

      // Messaging attributes, after the OpenTelemetry semantic conventions.
      const send = spans.find((s) => s.name === "send payments")!
      expect(send.attributes).toMatchObject({
        "messaging.system": "memory",
        "messaging.operation.type": "send",
        "messaging.destination.name": "payments"
      })
      expect(typeof send.attributes["messaging.message.id"]).toBe("string")
      const process = spans.find((s) => s.name === "process order-paid")!
      expect(process.kind).toBe(consumer)
      expect(process.attributes).toMatchObject({
        "messaging.operation.type": "process",
        "messaging.destination.name": "order-paid",
        "messaging.consumer.group.name": "shipping"
      })

      // Counters: monotonic sums whose values never go down between exports; durations in seconds.
      const counters = receiver.points.filter((p) => p.name.endsWith("_total"))
      expect(new Set(counters.map((p) => p.name))).toContain("bulwark_events_received_total")
      for (const p of counters) expect(p.monotonic, p.name).toBe(true)
      const series = new Map<string, Array<Point>>()
      for (const p of counters) series.set(p.name + p.attributes, [...(series.get(p.name + p.attributes) ?? []), p])
      for (const [key, points] of series) {
        const sorted = [...points].sort((a, b) => a.timeNanos - b.timeNanos)
        for (let i = 1; i < sorted.length; i++) expect(sorted[i]!.value, key).toBeGreaterThanOrEqual(sorted[i - 1]!.value)
      }
      expect(receiver.points.find((p) => p.name === "bulwark_handler_duration_seconds")?.unit).toBe("s")
      expect(receiver.points.filter((p) => p.name.startsWith("effect_"))).toEqual([])
    } finally {
      await receiver.close()
    }
  }, 90_000)
})
