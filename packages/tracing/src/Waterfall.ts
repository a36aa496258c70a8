/**
 * A trace as a picture: one self-contained HTML page with a waterfall of one trace's spans (indented by
 * parent, bars on a shared time axis, attributes on hover), plus the spans of other traces that link into it
 * (a relay's batch publish, a dead-letter replay). For readers who would rather look than read, and for
 * documentation: no backend to install.
 *
 * Input is OTLP/JSON as an exporter sends it (`ExportTraceServiceRequest` bodies, `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`),
 * read with {@link fromOtlpJson}.
 */

/** One span, as the waterfall needs it. */
export interface Span {
  readonly traceId: string
  readonly spanId: string
  /** `""` for a root. */
  readonly parentSpanId: string
  readonly name: string
  /** OTLP span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  readonly kind: number
  readonly startNanos: bigint
  readonly endNanos: bigint
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  readonly status: number
  readonly attributes: Readonly<Record<string, string | number | boolean>>
  readonly links: ReadonlyArray<{ readonly traceId: string; readonly spanId: string }>
  readonly events: ReadonlyArray<{ readonly name: string; readonly timeNanos: bigint }>
}

// OTLP/JSON encodes an AnyValue as an object with one typed field.
const valueOf = (value: any): string | number | boolean =>
  value?.stringValue ?? (value?.intValue !== undefined ? Number(value.intValue) : undefined) ?? value?.doubleValue ??
    value?.boolValue ?? ""

const nanos = (value: unknown): bigint => {
  try {
    return BigInt(String(value ?? "0"))
  } catch {
    return 0n
  }
}

/** The spans of one OTLP/JSON `ExportTraceServiceRequest` body (already parsed). */
export const fromOtlpJson = (body: unknown): Array<Span> => {
  const spans: Array<Span> = []
  for (const rs of (body as any)?.resourceSpans ?? []) {
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        spans.push({
          traceId: String(s.traceId ?? ""),
          spanId: String(s.spanId ?? ""),
          parentSpanId: String(s.parentSpanId ?? ""),
          name: String(s.name ?? ""),
          kind: Number(s.kind ?? 0),
          startNanos: nanos(s.startTimeUnixNano),
          endNanos: nanos(s.endTimeUnixNano),
          status: Number(s.status?.code ?? 0),
          attributes: Object.fromEntries((s.attributes ?? []).map((a: any) => [String(a.key), valueOf(a.value)])),
          links: (s.links ?? []).map((l: any) => ({ traceId: String(l.traceId), spanId: String(l.spanId) })),
          events: (s.events ?? []).map((e: any) => ({ name: String(e.name), timeNanos: nanos(e.timeUnixNano) }))
        })
      }
    }
  }
  return spans
}

const kindNames: Record<number, string> = { 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer" }

const escape = (text: string): string =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

interface Row {
  readonly span: Span
  readonly depth: number
  readonly linked: boolean
}

/** The spans of `traceId` in tree order (children by start time), then the spans of other traces linking into it. */
export const rowsOf = (spans: ReadonlyArray<Span>, traceId: string): Array<Row> => {
  const inTrace = spans.filter((s) => s.traceId === traceId)
  const ids = new Set(inTrace.map((s) => s.spanId))
  const children = new Map<string, Array<Span>>()
  for (const s of inTrace) {
    const parent = ids.has(s.parentSpanId) ? s.parentSpanId : ""
    children.set(parent, [...(children.get(parent) ?? []), s])
  }
  for (const list of children.values()) list.sort((a, b) => (a.startNanos < b.startNanos ? -1 : a.startNanos > b.startNanos ? 1 : 0))
  const rows: Array<Row> = []
  const walk = (parent: string, depth: number) => {
    for (const s of children.get(parent) ?? []) {
      rows.push({ span: s, depth, linked: false })
      walk(s.spanId, depth + 1)
    }
  }
  walk("", 0)
  const linking = spans
    .filter((s) => s.traceId !== traceId && s.links.some((l) => l.traceId === traceId))
    .sort((a, b) => (a.startNanos < b.startNanos ? -1 : 1))
  for (const s of linking) rows.push({ span: s, depth: 0, linked: true })
  return rows
}

/** A self-contained HTML page with the waterfall of `traceId` (the spans may hold many traces). */
export const render = (
  spans: ReadonlyArray<Span>,
  traceId: string,
  options: { readonly title?: string; readonly description?: string } = {}
): string => {
  const rows = rowsOf(spans, traceId)
  if (rows.length === 0) return `<!doctype html><title>no spans</title><p>No span of trace ${escape(traceId)}.</p>`
  const start = rows.reduce((min, r) => (r.span.startNanos < min ? r.span.startNanos : min), rows[0]!.span.startNanos)
  const end = rows.reduce((max, r) => (r.span.endNanos > max ? r.span.endNanos : max), rows[0]!.span.endNanos)
  const total = Number(end - start) || 1
  const pct = (t: bigint) => ((Number(t - start) / total) * 100).toFixed(3)
  const ms = (n: bigint) => (Number(n) / 1e6).toFixed(2)
  const linkTargets = new Set(rows.flatMap((r) => r.span.links.map((l) => l.spanId)))
  const body = rows.map(({ span, depth, linked }) => {
    const kind = kindNames[span.kind] ?? "internal"
    const duration = span.endNanos - span.startNanos
    const left = pct(span.startNanos)
    const width = Math.max(0.15, (Number(duration) / total) * 100).toFixed(3)
    const title = [
      `${span.name} (${kind}) ${ms(duration)} ms`,
      // `code.*` (a captured call site) would publish the machine's file paths.
      ...Object.entries(span.attributes).filter(([k]) => !k.startsWith("code.")).map(([k, v]) => `${k} = ${String(v)}`),
      ...span.links.map((l) => `link → ${l.traceId}/${l.spanId}`),
      ...span.events.map((e) => `event ${e.name} at +${ms(e.timeNanos - start)} ms`)
    ].join("\n")
    const events = span.events.map((e) =>
      `<i class="event" style="left:${pct(e.timeNanos)}%" title="${escape(e.name)}"></i>`
    ).join("")
    const marks = `${linked ? "<span class=\"tag\">linked</span> " : ""}${linkTargets.has(span.spanId) ? "<span class=\"tag\">link target</span> " : ""}`
    return `<tr class="${kind}${span.status === 2 ? " error" : ""}" title="${escape(title)}">` +
      `<td class="name" style="padding-left:${0.4 + depth * 1.1}em">${marks}${escape(span.name)}</td>` +
      `<td class="kind">${kind}</td><td class="ms">${ms(duration)}</td>` +
      `<td class="lane"><div class="bar" style="left:${left}%;width:${width}%"></div>${events}</td></tr>`
  }).join("\n")
  const title = options.title ?? `Trace ${traceId}`
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.2em;margin:0 0 .3em} p{margin:.2em 0 1em;max-width:70em}
table{border-collapse:collapse;width:100%;table-layout:fixed}
td{padding:2px 6px;border-bottom:1px solid #eee;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
td.name{width:30%} td.kind{width:6%;color:#666} td.ms{width:6%;text-align:right;color:#444}
td.lane{position:relative} .bar{position:absolute;top:4px;height:12px;border-radius:2px;background:#8da0cb}
tr.server .bar{background:#66c2a5} tr.producer .bar{background:#fc8d62} tr.consumer .bar{background:#8da0cb}
tr.client .bar{background:#e78ac3} tr.internal .bar{background:#a6d854} tr.error .bar{background:#d62728}
tr.error td.name{color:#d62728} .event{position:absolute;top:2px;width:2px;height:16px;background:#333}
.tag{font-size:.8em;background:#eee;border-radius:3px;padding:0 3px;color:#555}
tr:hover td{background:#f6f6f6}
.legend span{display:inline-block;margin-right:1em} .legend i{display:inline-block;width:1em;height:.8em;margin-right:.3em;vertical-align:middle}
</style></head><body>
<h1>${escape(title)}</h1>
${options.description === undefined ? "" : `<p>${escape(options.description)}</p>`}
<p class="legend"><span><i style="background:#66c2a5"></i>server</span><span><i style="background:#fc8d62"></i>producer</span><span><i style="background:#8da0cb"></i>consumer</span><span><i style="background:#e78ac3"></i>client</span><span><i style="background:#a6d854"></i>internal</span><span><i style="background:#d62728"></i>error</span><span><i style="background:#333"></i>span event</span> · ${rows.length} spans over ${ms(end - start)} ms · hover a row for its attributes</p>
<table><tbody>
${body}
</tbody></table>
</body></html>
`
}
