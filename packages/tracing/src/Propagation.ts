/**
 * W3C Trace Context carried inside messages.
 *
 * The context travels in the envelope's `traceparent` / `tracestate` headers, which the CloudEvents encoding
 * turns into top-level extension attributes (the CloudEvents distributed-tracing extension), so it survives
 * every transport, the outbox table and the dead-letter store. The format is implemented here rather than
 * through the global OpenTelemetry propagator so it also works under Effect's own tracer and in tests
 * without an SDK.
 */
import { Envelope } from "@bulwark/core"
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import { Context, Effect, Option, Schema, Tracer } from "effect"

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
export const formatTraceparent = (span: { readonly traceId: string; readonly spanId: string; readonly sampled: boolean }): string =>
  `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

const isValid = (span: Tracer.AnySpan) =>
  /^[0-9a-f]{32}$/.test(span.traceId) && span.traceId !== invalidTraceId &&
  /^[0-9a-f]{16}$/.test(span.spanId) && span.spanId !== invalidSpanId

/** The `tracestate` a span inherited from a remote parent, walking up to the nearest one that has it. */
const traceStateOf = (span: Tracer.AnySpan): string | undefined => {
  let current: Tracer.AnySpan | undefined = span
  while (current !== undefined) {
    const state: Option.Option<{ serialize(): string }> = Context.getOption(current.context, OtelTracer.OtelTraceState)
    if (Option.isSome(state)) return state.value.serialize()
    current = current._tag === "Span" ? Option.getOrUndefined(current.parent) : undefined
  }
  return undefined
}

/** The `traceparent` / `tracestate` headers describing `span`; empty when its ids are not valid W3C ids. */
export const headersOf = (span: Tracer.AnySpan): Record<string, string> => {
  if (!isValid(span)) return {}
  const headers: Record<string, string> = { [Envelope.HeaderNames.traceparent]: formatTraceparent(span) }
  const state = traceStateOf(span)
  if (state !== undefined && state !== "") headers[Envelope.HeaderNames.tracestate] = state
  return headers
}

/** The current span's trace context as headers; empty outside a span. */
export const currentHeaders: Effect.Effect<Record<string, string>> = Effect.map(
  Effect.option(Effect.currentSpan),
  Option.match({ onNone: () => ({}), onSome: headersOf })
)

/** `headers` with the current span's trace context written over any carried one. */
export const inject = (headers: Readonly<Record<string, string>>): Effect.Effect<Record<string, string>> =>
  Effect.map(currentHeaders, (context) => {
    if (context[Envelope.HeaderNames.traceparent] === undefined) return { ...headers }
    const { [Envelope.HeaderNames.tracestate]: _dropped, ...rest } = headers
    return { ...rest, ...context }
  })

/** The remote parent described by `headers`, usable with `Effect.withParentSpan` or as a span link. */
export const extract = (headers: Readonly<Record<string, string>>): Option.Option<Tracer.ExternalSpan> =>
  Option.map(parseTraceparent(headers[Envelope.HeaderNames.traceparent]), (parent) =>
    OtelTracer.makeExternalSpan({
      traceId: parent.traceId,
      spanId: parent.spanId,
      traceFlags: parent.sampled ? 1 : 0,
      traceState: headers[Envelope.HeaderNames.tracestate]
    }))

/** Runs `effect` as a continuation of the trace carried by `headers` (unchanged when they carry none). */
export const withRemoteParent = (headers: Readonly<Record<string, string>>) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Option.match(extract(headers), {
    onNone: () => effect,
    onSome: (parent) => Effect.withParentSpan(effect, parent) as Effect.Effect<A, E, R>
  })

/** A span link to the context `headers` carry, for batch consumption. */
export const linkTo = (
  headers: Readonly<Record<string, string>>,
  attributes: Record<string, unknown> = {}
): Option.Option<Tracer.SpanLink> =>
  Option.map(extract(headers), (span) => ({ _tag: "SpanLink", span, attributes }))

const decodeEnvelope = Envelope.decode(Schema.Unknown)
const encodeEnvelope = Envelope.encode(Schema.Unknown)

/** The envelope inside a CloudEvents payload, when it is one (anything else travels untouched). */
export const peek = (payload: Uint8Array): Effect.Effect<Option.Option<Envelope.Envelope<unknown>>> =>
  Effect.option(decodeEnvelope(payload))

/**
 * Rewrites a CloudEvents payload with `headers` merged into its envelope headers; the payload is returned as
 * it was when it is not a CloudEvent, so a foreign message is never corrupted.
 */
export const rewritePayload = (
  payload: Uint8Array,
  envelope: Envelope.Envelope<unknown>,
  headers: Readonly<Record<string, string>>
): Effect.Effect<Uint8Array> =>
  Effect.orElseSucceed(encodeEnvelope(Envelope.withHeaders(envelope, headers)), () => payload)
