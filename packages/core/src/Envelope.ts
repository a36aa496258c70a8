/**
 * The envelope every Bulwark message travels in, and its CloudEvents 1.0 structured-JSON form.
 *
 * An envelope's `subject` is the business key: it orders messages (one in flight per subject when a
 * pipeline asks for ordering) and is the natural idempotency key when the producer's ids are not stable.
 */
import { DateTime, Effect, Either, ParseResult, Random, Schema } from "effect"
import { randomUUID } from "node:crypto"
import { dual } from "effect/Function"

/** Well-known header names carried in `Envelope.headers`. */
export const HeaderNames = {
  traceparent: "traceparent",
  tracestate: "tracestate",
  correlationId: "correlation-id",
  causationId: "causation-id",
  deadline: "bulwark-deadline"
} as const

/** A message as Bulwark handles it: CloudEvents attributes, a typed payload, string headers and the delivery attempt. */
export interface Envelope<A> {
  /** Stable across retries and redeliveries: the producer's event id. */
  readonly id: string
  /** The event type, e.g. `com.example.order.paid`. */
  readonly type: string
  /** Who emitted it (a URI reference). */
  readonly source: string
  /** The business / ordering key. */
  readonly subject: string
  /** When the event happened, as the producer says. */
  readonly time: DateTime.Utc
  /** The payload, decoded with the user's schema. */
  readonly data: A
  /** Propagation and correlation headers (`traceparent`, `correlation-id`, …). */
  readonly headers: Readonly<Record<string, string>>
  /** 1 on the first delivery, incremented on every redelivery or retry. */
  readonly attempt: number
  /**
   * The CloudEvents `dataschema`: which contract (id and version) the payload was written against, so a
   * consumer can reject or route by version and a dead-lettered message shows what it was written with.
   */
  readonly dataschema?: string
}

/** The wire-independent encoded form of an envelope (time as an ISO string, data as its schema encodes it). */
export interface EnvelopeEncoded<I> {
  readonly id: string
  readonly type: string
  readonly source: string
  readonly subject: string
  readonly time: string
  readonly data: I
  readonly headers: Readonly<Record<string, string>>
  readonly attempt: number
  readonly dataschema?: string
}

/** Header map schema: string keys, string values. */
export const Headers = Schema.Record({ key: Schema.String, value: Schema.String })

/** The schema of an envelope whose payload is described by `data`. */
export const schema = <A, I, R>(
  data: Schema.Schema<A, I, R>
): Schema.Schema<Envelope<A>, EnvelopeEncoded<I>, R> =>
  Schema.Struct({
    id: Schema.NonEmptyString,
    type: Schema.NonEmptyString,
    source: Schema.NonEmptyString,
    subject: Schema.String,
    time: Schema.DateTimeUtc,
    data,
    headers: Headers,
    attempt: Schema.Int.pipe(Schema.greaterThanOrEqualTo(0)),
    dataschema: Schema.optionalWith(Schema.String, { exact: true })
  })

const hex = (n: number): string => (n >>> 0).toString(16).padStart(8, "0")

// Effect's own default Random (unseeded). A fiber that runs with it gets ids from the platform's generator;
// any other Random (a seeded one, as the simulator provides) draws the id from that Random, reproducibly.
const defaultRandom = Effect.runSync(Effect.random)

const seededUuid = (random: Random.Random): Effect.Effect<string> =>
  Effect.map(
    Effect.all([
      random.nextIntBetween(0, 0x1_0000_0000),
      random.nextIntBetween(0, 0x1_0000_0000),
      random.nextIntBetween(0, 0x1_0000_0000),
      random.nextIntBetween(0, 0x1_0000_0000)
    ]),
    ([a, b, c, d]) => {
      const s = hex(a) + hex((b & 0xffff0fff) | 0x00004000) + hex((c & 0x3fffffff) | 0x80000000) + hex(d)
      return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`
    }
  )

/**
 * A random (v4) UUID. Drawn from Effect's `Random` when the fiber has its own (a seeded `Random`, such as the
 * simulator's, makes ids reproducible where `crypto.randomUUID` could not); from `crypto.randomUUID` otherwise.
 */
export const uuid: Effect.Effect<string> = Effect.randomWith((random) =>
  random === defaultRandom ? Effect.sync(randomUUID) : seededUuid(random)
)

/** What a caller supplies to {@link make}; the rest is filled in. */
export interface MakeOptions<A> {
  readonly type: string
  readonly source: string
  readonly subject: string
  readonly data: A
  readonly id?: string
  readonly time?: DateTime.Utc
  readonly headers?: Readonly<Record<string, string>>
  readonly attempt?: number
  /** The contract id and version of the payload (CloudEvents `dataschema`). */
  readonly dataschema?: string
}

/** Builds an envelope, drawing the id from `Random` and the time from `Clock` when not given. */
export const make = <A>(options: MakeOptions<A>): Effect.Effect<Envelope<A>> => {
  // Written with combinators rather than a generator: producers call it once per event.
  const build = (id: string, time: DateTime.Utc): Envelope<A> => ({
    id,
    type: options.type,
    source: options.source,
    subject: options.subject,
    time,
    data: options.data,
    headers: options.headers ?? {},
    attempt: options.attempt ?? 0,
    ...(options.dataschema === undefined ? {} : { dataschema: options.dataschema })
  })
  const time = options.time
  const withId = (id: string) => time !== undefined ? Effect.succeed(build(id, time)) : Effect.map(DateTime.now, (now) => build(id, now))
  return options.id !== undefined ? withId(options.id) : Effect.flatMap(uuid, withId)
}

/** Returns a copy with extra headers (later values win). */
export const withHeaders: {
  (headers: Readonly<Record<string, string>>): <A>(self: Envelope<A>) => Envelope<A>
  <A>(self: Envelope<A>, headers: Readonly<Record<string, string>>): Envelope<A>
} = dual(2, <A>(self: Envelope<A>, headers: Readonly<Record<string, string>>): Envelope<A> => ({
  ...self,
  headers: { ...self.headers, ...headers }
}))

/** The correlation id of a conversation: the header if present, otherwise the envelope's own id. */
export const correlationId = <A>(self: Envelope<A>): string => self.headers[HeaderNames.correlationId] ?? self.id

/**
 * Headers for an event caused by `cause`: same correlation id, causation id = the cause's id, and the
 * trace context carried over so one trace follows the chain.
 */
export const causedBy = <A>(cause: Envelope<A>): Record<string, string> => {
  const headers: Record<string, string> = {
    [HeaderNames.correlationId]: correlationId(cause),
    [HeaderNames.causationId]: cause.id
  }
  for (const name of [HeaderNames.traceparent, HeaderNames.tracestate, HeaderNames.deadline]) {
    const value = cause.headers[name]
    if (value !== undefined) headers[name] = value
  }
  return headers
}

/**
 * Why bytes could not become an envelope. It carries the raw bytes so nothing is lost: the pipeline
 * dead-letters it in the `schema` category with the original payload intact.
 */
export class EnvelopeDecodeError extends Schema.TaggedError<EnvelopeDecodeError>()("EnvelopeDecodeError", {
  reason: Schema.Literal("malformed-json", "not-cloudevent", "unsupported-specversion", "invalid-envelope"),
  detail: Schema.String,
  raw: Schema.Uint8ArrayFromBase64
}) {
  override get message(): string {
    return `${this.reason}: ${this.detail}`
  }
}

/** Why an envelope could not be encoded (its data did not satisfy the schema). */
export class EnvelopeEncodeError extends Schema.TaggedError<EnvelopeEncodeError>()("EnvelopeEncodeError", {
  id: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `cannot encode envelope ${this.id}: ${this.detail}`
  }
}

// CloudEvents 1.0 context attributes and the extension names Bulwark itself uses.
const reservedAttributes = new Set([
  "specversion",
  "id",
  "source",
  "type",
  "subject",
  "time",
  "datacontenttype",
  "dataschema",
  "data",
  "data_base64"
])
const headersExtension = "bulwarkheaders"
const attemptExtension = "bulwarkattempt"
const validExtensionName = /^[a-z0-9]{1,20}$/

const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { fatal: true })

/** The CloudEvents structured-mode content type. */
export const cloudEventsContentType = "application/cloudevents+json; charset=utf-8"

/**
 * Encodes to a CloudEvents 1.0 structured JSON object. Headers whose names are valid CloudEvents
 * extension names (`traceparent`, `tracestate`, …) become top-level extension attributes, so any
 * CloudEvents tool (and the distributed-tracing extension) reads them; the others ride in `bulwarkheaders`.
 */
export const toCloudEvent = <A, I, R>(data: Schema.Schema<A, I, R>) => {
  const encodeData = Schema.encode(data)
  return (self: Envelope<A>): Effect.Effect<Record<string, unknown>, EnvelopeEncodeError, R> =>
    Effect.map(
      Effect.mapError(encodeData(self.data), (error) =>
        new EnvelopeEncodeError({ id: self.id, detail: ParseResult.TreeFormatter.formatErrorSync(error) })),
      (encodedData) => cloudEventOf(self, encodedData)
    )
}

/** The CloudEvents object of an envelope whose data is already encoded. */
// The last time formatted: a busy producer stamps many envelopes within one millisecond.
let lastIsoMillis = Number.NaN
let lastIso = ""
const isoOf = (time: DateTime.Utc): string => {
  if (time.epochMillis !== lastIsoMillis) {
    lastIso = DateTime.formatIso(time)
    lastIsoMillis = time.epochMillis
  }
  return lastIso
}

/**
 * A string as JSON: a string with nothing to escape is quoted as is (one scan, no call into the serializer);
 * anything else goes through `JSON.stringify`, so the output is always what it would write.
 */
const quote = (text: string): string => {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x20 || c === 0x22 || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return JSON.stringify(text)
  }
  return `"${text}"`
}

/**
 * `JSON.stringify(cloudEventOf(self, encodedData))` for the common envelope (string attributes, no headers),
 * written directly: the serializer then only walks the data. Byte for byte the same text (the attribute order of
 * `cloudEventOf`, a key without a value left out); `undefined` for any other envelope, which takes the general path.
 */
const fastCloudEventJson = (self: Envelope<unknown>, encodedData: unknown): string | undefined => {
  const { id, source, type, subject, dataschema, attempt } = self
  for (const _ in self.headers) return undefined
  if (typeof id !== "string" || typeof source !== "string" || typeof type !== "string" || typeof subject !== "string") {
    return undefined
  }
  if ((dataschema !== undefined && typeof dataschema !== "string") || typeof attempt !== "number" || !Number.isFinite(attempt)) {
    return undefined
  }
  // `toJSON` is called with the key it is stored under ("data" inside the event, "" alone): left to the general path.
  if (typeof encodedData === "object" && encodedData !== null && typeof (encodedData as { toJSON?: unknown }).toJSON === "function") {
    return undefined
  }
  const data = JSON.stringify(encodedData)
  return `{"specversion":"1.0","id":${quote(id)},"source":${quote(source)},"type":${quote(type)},"time":${
    quote(isoOf(self.time))
  },"datacontenttype":"application/json"${data === undefined ? "" : `,"data":${data}`}${subject === "" ? "" : `,"subject":${quote(subject)}`}${
    dataschema === undefined ? "" : `,"dataschema":${quote(dataschema)}`
  },"${attemptExtension}":${JSON.stringify(attempt)}}`
}

const cloudEventOf = (self: Envelope<unknown>, encodedData: unknown): Record<string, unknown> => {
  const event: Record<string, unknown> = {
    specversion: "1.0",
    id: self.id,
    source: self.source,
    type: self.type,
    time: isoOf(self.time),
    datacontenttype: "application/json",
    data: encodedData
  }
  if (self.subject !== "") event.subject = self.subject
  if (self.dataschema !== undefined) event.dataschema = self.dataschema
  const others: Record<string, string> = {}
  let hasOthers = false
  for (const [name, value] of Object.entries(self.headers)) {
    if (validExtensionName.test(name) && !reservedAttributes.has(name) && name !== attemptExtension) {
      event[name] = value
    } else {
      others[name] = value
      hasOthers = true
    }
  }
  if (hasOthers) event[headersExtension] = JSON.stringify(others)
  event[attemptExtension] = self.attempt
  return event
}

/**
 * Encodes an envelope to CloudEvents bytes given its data already in encoded (JSON) form, without Effect:
 * for hot paths that encoded the data themselves (e.g. with `Schema.encodeEither`).
 */
export const encodeEncoded = (self: Envelope<unknown>, encodedData: unknown): Uint8Array =>
  encoder.encode(fastCloudEventJson(self, encodedData) ?? JSON.stringify(cloudEventOf(self, encodedData)))

/**
 * Encodes an envelope to CloudEvents 1.0 structured JSON bytes: `JSON.stringify` of {@link toCloudEvent}'s
 * object, written directly when that can be done ({@link encodeEncoded}; the same bytes).
 */
export const encode = <A, I, R>(data: Schema.Schema<A, I, R>) => {
  const encodeData = Schema.encode(data)
  return (self: Envelope<A>): Effect.Effect<Uint8Array, EnvelopeEncodeError, R> =>
    Effect.mapBoth(encodeData(self.data), {
      onFailure: (error) => new EnvelopeEncodeError({ id: self.id, detail: ParseResult.TreeFormatter.formatErrorSync(error) }),
      onSuccess: (encodedData) => encodeEncoded(self, encodedData)
    })
}

const fail = (reason: EnvelopeDecodeError["reason"], detail: string, raw: Uint8Array) =>
  Either.left(new EnvelopeDecodeError({ reason, detail, raw }))

const isRecord = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** Reads the CloudEvents attributes into the envelope's encoded shape, without decoding `data` yet. */
const readCloudEvent = (
  raw: Uint8Array
): Either.Either<EnvelopeEncoded<unknown>, EnvelopeDecodeError> => {
  let text: string
  let json: unknown
  try {
    text = decoder.decode(raw)
    json = JSON.parse(text)
  } catch (error) {
    return fail("malformed-json", error instanceof Error ? error.message : String(error), raw)
  }
  if (!isRecord(json)) return fail("not-cloudevent", "expected a JSON object", raw)
  if (json.specversion === undefined) return fail("not-cloudevent", "missing specversion", raw)
  if (json.specversion !== "1.0") {
    return fail("unsupported-specversion", `specversion ${JSON.stringify(json.specversion)} is not 1.0`, raw)
  }
  for (const name of ["id", "source", "type"] as const) {
    if (typeof json[name] !== "string" || json[name] === "") {
      return fail("not-cloudevent", `attribute "${name}" must be a non-empty string`, raw)
    }
  }
  let data: unknown = json.data
  if (json.data === undefined && typeof json.data_base64 === "string") {
    try {
      data = JSON.parse(Buffer.from(json.data_base64, "base64").toString("utf-8"))
    } catch (error) {
      return fail("invalid-envelope", "data_base64 is not base64-encoded JSON", raw)
    }
  }
  const headers: Record<string, string> = {}
  if (json[headersExtension] !== undefined) {
    let carried: unknown
    try {
      carried = typeof json[headersExtension] === "string" ? JSON.parse(json[headersExtension]) : undefined
    } catch {
      carried = undefined
    }
    if (!isRecord(carried) || Object.values(carried).some((v) => typeof v !== "string")) {
      return fail("invalid-envelope", `${headersExtension} must be a JSON string map`, raw)
    }
    Object.assign(headers, carried)
  }
  for (const [name, value] of Object.entries(json)) {
    if (reservedAttributes.has(name) || name === headersExtension || name === attemptExtension) continue
    // Extensions from other producers become headers so nothing they carried is dropped.
    if (typeof value === "string") headers[name] = value
    else if (typeof value === "number" || typeof value === "boolean") headers[name] = String(value)
  }
  const attempt = json[attemptExtension] === undefined ? 0 : json[attemptExtension]
  return Either.right({
    id: json.id as string,
    source: json.source as string,
    type: json.type as string,
    subject: typeof json.subject === "string" ? json.subject : "",
    time: typeof json.time === "string" ? json.time : (json.time as string),
    data,
    headers,
    attempt: attempt as number,
    ...(typeof json.dataschema === "string" ? { dataschema: json.dataschema } : {})
  })
}

/**
 * Decodes CloudEvents 1.0 structured JSON bytes into an envelope. Every failure — bad UTF-8, bad JSON,
 * a missing attribute, a payload the schema rejects — is an {@link EnvelopeDecodeError} carrying the bytes.
 */
export const decode = <A, I, R>(data: Schema.Schema<A, I, R>) => {
  const decodeEnvelope = Schema.decodeUnknown(schema(data), { errors: "all", onExcessProperty: "ignore" })
  const decodeData = Schema.decodeUnknown(data, { errors: "all", onExcessProperty: "ignore" })
  // The whole-envelope schema states the rules and words the errors; it is what runs when anything is off.
  const decodeWhole = (encoded: EnvelopeEncoded<unknown>, raw: Uint8Array) =>
    Effect.mapError(
      decodeEnvelope(encoded.time === undefined ? { ...encoded, time: "" } : encoded),
      (error) =>
        new EnvelopeDecodeError({
          reason: "invalid-envelope",
          detail: ParseResult.TreeFormatter.formatErrorSync(error),
          raw
        })
    )
  // The CloudEvents attributes are already checked by the reader, so a well-formed message only runs its
  // `data` through the schema: this runs once per delivery.
  return (raw: Uint8Array): Effect.Effect<Envelope<A>, EnvelopeDecodeError, R> => {
    const read = readCloudEvent(raw)
    if (Either.isLeft(read)) return Effect.fail(read.left)
    const encoded = read.right
    const time = typeof encoded.time === "string" ? parseTime(encoded.time) : undefined
    if (time === undefined || !Number.isInteger(encoded.attempt) || encoded.attempt < 0) return decodeWhole(encoded, raw)
    return Effect.matchEffect(decodeData(encoded.data), {
      onFailure: () => decodeWhole(encoded, raw),
      onSuccess: (decoded) =>
        Effect.succeed({
          id: encoded.id,
          type: encoded.type,
          source: encoded.source,
          subject: encoded.subject,
          time,
          data: decoded,
          headers: encoded.headers,
          attempt: encoded.attempt,
          ...(encoded.dataschema === undefined ? {} : { dataschema: encoded.dataschema })
        })
    })
  }
}

/** As `Schema.DateTimeUtc` decodes a string; undefined where it would fail. */
const parseTime = (input: string): DateTime.Utc | undefined => {
  try {
    return DateTime.unsafeMake(input)
  } catch {
    return undefined
  }
}

/** Encodes an envelope to its JSON-safe encoded form (for storage beside other columns). */
export const encodeUnknown = <A, I, R>(data: Schema.Schema<A, I, R>) => Schema.encode(schema(data))
