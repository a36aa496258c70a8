/**
 * W3C Trace Context (`traceparent` / `tracestate`) over plain header records, for every Bulwark package.
 *
 * Producers write the context of their span into a message's headers (transport headers, outbox rows,
 * dead-letter entries all keep them); consumers read it back as the parent (or a link) of their span. The
 * format is implemented here, over Effect's own `Tracer` types, so it works under Effect's built-in tracer,
 * under the OpenTelemetry one and in tests without either, and so no package needs an OpenTelemetry import.
 */
import { Context, Effect, Option, Tracer } from "effect"

/** The header names of the W3C Trace Context format. */
export const HeaderNames = {
  traceparent: "traceparent",
  tracestate: "tracestate"
} as const

/** A parsed `traceparent`: version 00 fields. */
export interface TraceParent {
  readonly traceId: string
  readonly spanId: string
  readonly sampled: boolean
}

const traceparentPattern = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/
const invalidTraceId = "0".repeat(32)
const invalidSpanId = "0".repeat(16)

/** Parses a `traceparent` header; `None` for anything the W3C spec says to ignore. */
export const parseTraceparent = (value: string | undefined): Option.Option<TraceParent> => {
  if (value === undefined) return Option.none()
  const match = traceparentPattern.exec(value.trim().toLowerCase())
  if (match === null) return Option.none()
  const [, version, traceId, spanId, flags, rest] = match
  // Version ff is forbidden; version 00 has no trailing fields; later versions may append fields.
  if (version === "ff" || (version === "00" && rest !== undefined)) return Option.none()
  if (traceId === invalidTraceId || spanId === invalidSpanId) return Option.none()
  return Option.some({ traceId: traceId!, spanId: spanId!, sampled: (Number.parseInt(flags!, 16) & 1) === 1 })
}

/** Formats a span's context as a version-00 `traceparent`. */
export const formatTraceparent = (
  span: { readonly traceId: string; readonly spanId: string; readonly sampled: boolean }
): string => `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

/** The `tracestate` an extracted remote parent carried, kept in the external span's context. */
export class TraceState extends Context.Tag("@bulwark/core/TraceContext/TraceState")<TraceState, string>() {}

// The OpenTelemetry tracer keeps a remote parent's state under this key (a `TraceState` with `serialize`).
const OtelTraceState = Context.GenericTag<{ serialize(): string }>("@effect/opentelemetry/Tracer/OtelTraceState")

/** True when a span has ids the W3C format can carry (a no-op tracer's all-zero ids cannot). */
export const isValid = (span: { readonly traceId: string; readonly spanId: string }): boolean =>
  isLowerHex(span.traceId, 32) && span.traceId !== invalidTraceId && isLowerHex(span.spanId, 16) && span.spanId !== invalidSpanId

// `/^[0-9a-f]{n}$/` as a loop: it runs for every message stamped, and a regex test there costs more than the rest.
const isLowerHex = (text: string, length: number): boolean => {
  if (text.length !== length) return false
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i)
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false
  }
  return true
}

/** The `tracestate` a span inherited from a remote parent, walking up to the nearest one that has it. */
const traceStateOf = (span: Tracer.AnySpan): string | undefined => {
  let current: Tracer.AnySpan | undefined = span
  while (current !== undefined) {
    const own: Option.Option<string> = Context.getOption(current.context, TraceState)
    if (Option.isSome(own)) return own.value
    const otel: Option.Option<{ serialize(): string }> = Context.getOption(current.context, OtelTraceState)
    if (Option.isSome(otel)) return otel.value.serialize()
    current = current._tag === "Span" ? Option.getOrUndefined(current.parent) : undefined
  }
  return undefined
}

/** A span's context as `traceparent` (and `tracestate` when it has one) headers; empty for invalid ids. */
export const headersOf = (span: Tracer.AnySpan): Record<string, string> => {
  if (!isValid(span)) return {}
  const headers: Record<string, string> = { [HeaderNames.traceparent]: formatTraceparent(span) }
  const state = traceStateOf(span)
  if (state !== undefined && state !== "") headers[HeaderNames.tracestate] = state
  return headers
}

/** The current span's trace context as headers; empty outside a span (or with the tracer disabled). */
export const currentHeaders: Effect.Effect<Record<string, string>> = Effect.withFiberRuntime((fiber) => {
  let span = fiber.currentSpan
  while (span !== undefined && Context.get(span.context, Tracer.DisablePropagation)) {
    span = span._tag === "Span" ? Option.getOrUndefined(span.parent) : undefined
  }
  return Effect.succeed(span === undefined ? {} : headersOf(span))
})

/** `headers` with `context` written over any carried trace context (a carried `tracestate` is dropped). */
export const stamp = (
  headers: Readonly<Record<string, string>>,
  context: Readonly<Record<string, string>>
): Record<string, string> => {
  if (context[HeaderNames.traceparent] === undefined) return { ...headers }
  const { [HeaderNames.tracestate]: _dropped, ...rest } = headers
  return { ...rest, ...context }
}

/**
 * Messages stamped with `span`'s trace context (a producer span around their send or append), except those whose
 * own carried context (`carried[i]`, from {@link extract}) belongs to another trace: those are forwarded untouched.
 */
export const stampAll = <M extends { readonly headers: Readonly<Record<string, string>> }>(
  messages: ReadonlyArray<M>,
  carried: ReadonlyArray<Option.Option<Tracer.ExternalSpan>>,
  span: Tracer.AnySpan
): ReadonlyArray<M> => {
  const context = headersOf(span)
  return messages.map((message, i) => {
    const own = carried[i]!
    return Option.isSome(own) && own.value.traceId !== span.traceId
      ? message
      : { ...message, headers: stamp(message.headers, context) }
  })
}

/** `headers` with the current span's trace context written over any carried one. */
export const inject = (headers: Readonly<Record<string, string>>): Effect.Effect<Record<string, string>> =>
  Effect.map(currentHeaders, (context) => stamp(headers, context))

/** The remote parent described by `headers`, usable as a span's `parent` or in a span link. */
export const extract = (headers: Readonly<Record<string, string>>): Option.Option<Tracer.ExternalSpan> => {
  const traceparent = headers[HeaderNames.traceparent]
  if (traceparent === undefined) return Option.none()
  return Option.map(parseTraceparent(traceparent), (parent) => {
    const state = headers[HeaderNames.tracestate]
    return Tracer.externalSpan({
      traceId: parent.traceId,
      spanId: parent.spanId,
      sampled: parent.sampled,
      context: state === undefined || state === "" ? Context.empty() : Context.make(TraceState, state)
    })
  })
}

/** Runs `effect` as a continuation of the trace carried by `headers` (unchanged when they carry none). */
export const withRemoteParent = (headers: Readonly<Record<string, string>>) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Option.match(extract(headers), {
    onNone: () => effect,
    onSome: (parent) => Effect.withParentSpan(effect, parent)
  })

/** A span link to the context `headers` carry (batches, replays: many or foreign parents). */
export const linkTo = (
  headers: Readonly<Record<string, string>>,
  attributes: Record<string, unknown> = {}
): Option.Option<Tracer.SpanLink> => Option.map(extract(headers), (span) => ({ _tag: "SpanLink", span, attributes }))
