import { describe, expect, it } from "@effect/vitest"
import * as Waterfall from "../src/Waterfall.js"

const attr = (key: string, value: string) => ({ key, value: { stringValue: value } })

const body = {
  resourceSpans: [{
    scopeSpans: [{
      spans: [
        { traceId: "t1", spanId: "a", name: "webhook.receive acmepay", kind: 2, startTimeUnixNano: "1000000", endTimeUnixNano: "9000000", attributes: [attr("messaging.message.id", "evt_1"), attr("code.stacktrace", "at x (/home/me/app.ts:1:1)")] },
        { traceId: "t1", spanId: "c", parentSpanId: "b", name: "process <payments>", kind: 5, startTimeUnixNano: "4000000", endTimeUnixNano: "8000000", status: { code: 2 } },
        { traceId: "t1", spanId: "b", parentSpanId: "a", name: "send payments", kind: 4, startTimeUnixNano: "2000000", endTimeUnixNano: "3000000", events: [{ name: "bulwark.breaker.state_change", timeUnixNano: "2500000" }] },
        { traceId: "t2", spanId: "d", name: "send order-paid", kind: 4, startTimeUnixNano: "8500000", endTimeUnixNano: "8600000", links: [{ traceId: "t1", spanId: "c" }] },
        { traceId: "t3", spanId: "e", name: "unrelated", kind: 1, startTimeUnixNano: "1", endTimeUnixNano: "2" }
      ]
    }]
  }]
}

describe("Waterfall", () => {
  it("orders one trace's spans as a tree, then the spans of other traces that link into it", () => {
    const spans = Waterfall.fromOtlpJson(body)
    const rows = Waterfall.rowsOf(spans, "t1")
    expect(rows.map((r) => [r.span.name, r.depth, r.linked])).toEqual([
      ["webhook.receive acmepay", 0, false],
      ["send payments", 1, false],
      ["process <payments>", 2, false],
      ["send order-paid", 0, true]
    ])
  })

  it("renders a self-contained page: escaped names, errors marked, events drawn, no captured file paths", () => {
    const html = Waterfall.render(Waterfall.fromOtlpJson(body), "t1", { title: "One webhook" })
    expect(html).toContain("<h1>One webhook</h1>")
    expect(html).toContain("process &lt;payments&gt;")
    expect(html).toContain(`class="consumer error"`)
    expect(html).toContain(`title="bulwark.breaker.state_change"`)
    expect(html).toContain("messaging.message.id = evt_1")
    expect(html).not.toContain("/home/me")
    expect(html).not.toContain("unrelated")
    expect(html).not.toMatch(/<script|https?:\/\//)
  })
})
