import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, FastCheck as fc, Random, Schema } from "effect"
import * as Envelope from "../src/Envelope.js"
import * as Failure from "../src/Failure.js"

const OrderPaid = Schema.Struct({ orderId: Schema.String, amountCents: Schema.Int })
const encode = Envelope.encode(OrderPaid)
const decode = Envelope.decode(OrderPaid)
const text = new TextDecoder()
const bytes = (value: unknown) => new TextEncoder().encode(typeof value === "string" ? value : JSON.stringify(value))

const sample = Envelope.make({
  id: "evt-1",
  type: "com.example.order.paid",
  source: "/payments",
  subject: "order-42",
  time: DateTime.unsafeMake("2026-01-02T03:04:05.678Z"),
  data: { orderId: "order-42", amountCents: 1999 },
  headers: {
    traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "correlation-id": "corr-1"
  },
  attempt: 2
})

describe("Envelope", () => {
  it.effect("carries the contract version as CloudEvents dataschema, both ways, and leaves it out when there is none", () =>
    Effect.gen(function*() {
      const versioned = yield* Envelope.make({ ...(yield* sample), dataschema: "urn:bulwark:contract:orders/paid:v2" })
      const json = JSON.parse(text.decode(yield* encode(versioned)))
      expect(json.dataschema).toBe("urn:bulwark:contract:orders/paid:v2")
      const decoded = yield* decode(bytes(json))
      expect(decoded.dataschema).toBe("urn:bulwark:contract:orders/paid:v2")
      expect(decoded).toEqual(versioned)
      const plain = JSON.parse(text.decode(yield* encode(yield* sample)))
      expect("dataschema" in plain).toBe(false)
      expect("dataschema" in (yield* decode(bytes(plain)))).toBe(false)
      // A dataschema that is not a string is ignored rather than failing the message.
      expect("dataschema" in (yield* decode(bytes({ ...plain, dataschema: 7 })))).toBe(false)
    }))

  it.effect("encodes to CloudEvents 1.0 structured JSON that any CloudEvents reader understands", () =>
    Effect.gen(function*() {
      const json = JSON.parse(text.decode(yield* encode(yield* sample)))
      expect(json).toMatchObject({
        specversion: "1.0",
        id: "evt-1",
        type: "com.example.order.paid",
        source: "/payments",
        subject: "order-42",
        time: "2026-01-02T03:04:05.678Z",
        datacontenttype: "application/json",
        data: { orderId: "order-42", amountCents: 1999 },
        // The distributed-tracing extension is a top-level attribute.
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        bulwarkattempt: 2
      })
      // Header names that are not valid CloudEvents attribute names ride in one extension.
      expect(JSON.parse(json.bulwarkheaders)).toEqual({ "correlation-id": "corr-1" })
    }))

  it.effect("decodes what it encoded", () =>
    Effect.gen(function*() {
      const original = yield* sample
      const back = yield* decode(yield* encode(original))
      expect(back.id).toBe(original.id)
      expect(back.subject).toBe("order-42")
      expect(back.data).toEqual(original.data)
      expect(back.headers).toEqual(original.headers)
      expect(back.attempt).toBe(2)
      expect(DateTime.toEpochMillis(back.time)).toBe(DateTime.toEpochMillis(original.time))
    }))

  it.effect("reads events from other CloudEvents producers, keeping their extensions as headers", () =>
    Effect.gen(function*() {
      const foreign = {
        specversion: "1.0",
        id: "A234-1234-1234",
        source: "https://github.com/cloudevents/spec/pull",
        type: "com.example.order.paid",
        time: "2018-04-05T17:31:00Z",
        partitionkey: "order-7",
        priority: 3,
        data_base64: Buffer.from(JSON.stringify({ orderId: "order-7", amountCents: 5 })).toString("base64")
      }
      const envelope = yield* decode(bytes(foreign))
      expect(envelope.subject).toBe("")
      expect(envelope.headers).toEqual({ partitionkey: "order-7", priority: "3" })
      expect(envelope.data).toEqual({ orderId: "order-7", amountCents: 5 })
      expect(envelope.attempt).toBe(0)
    }))

  it.effect("every decode failure is typed, says why, and keeps the raw bytes", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<[unknown, Envelope.EnvelopeDecodeError["reason"]]> = [
        ["{not json", "malformed-json"],
        [[1, 2], "not-cloudevent"],
        [{ id: "x", source: "s", type: "t" }, "not-cloudevent"],
        [{ specversion: "0.3", id: "x", source: "s", type: "t" }, "unsupported-specversion"],
        [{ specversion: "1.0", id: "", source: "s", type: "t" }, "not-cloudevent"],
        [{ specversion: "1.0", id: "x", source: "s", type: "t", time: "2026-01-01T00:00:00Z", data: { orderId: 1 } }, "invalid-envelope"],
        [{ specversion: "1.0", id: "x", source: "s", type: "t", time: "yesterday", data: { orderId: "o", amountCents: 1 } }, "invalid-envelope"]
      ]
      for (const [input, reason] of cases) {
        const raw = bytes(input)
        const error = yield* Effect.flip(decode(raw))
        expect(error._tag).toBe("EnvelopeDecodeError")
        expect(error.reason).toBe(reason)
        expect(error.raw).toBe(raw)
        expect(error.message.length).toBeGreaterThan(reason.length)
      }
      const notUtf8 = new Uint8Array([0xff, 0xfe, 0xfd])
      expect((yield* Effect.flip(decode(notUtf8))).reason).toBe("malformed-json")
    }))

  it.effect("a decode error is itself persistable: it encodes with its raw bytes and classifies as a permanent schema failure", () =>
    Effect.gen(function*() {
      const raw = bytes("{oops")
      const error = yield* Effect.flip(decode(raw))
      const encoded = yield* Schema.encode(Envelope.EnvelopeDecodeError)(error)
      const restored = yield* Schema.decodeUnknown(Envelope.EnvelopeDecodeError)(JSON.parse(JSON.stringify(encoded)))
      expect([...restored.raw]).toEqual([...raw])
      expect(yield* Failure.classify(error)).toEqual({ classification: "permanent", category: "schema" })
    }))

  it.effect("ids come from Effect's Random, so a seeded Random reproduces them", () =>
    Effect.gen(function*() {
      const first = yield* Effect.withRandom(Envelope.uuid, Random.make("seed-1"))
      const again = yield* Effect.withRandom(Envelope.uuid, Random.make("seed-1"))
      const other = yield* Effect.withRandom(Envelope.uuid, Random.make("seed-2"))
      expect(first).toBe(again)
      expect(first).not.toBe(other)
      expect(first).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    }))

  it.effect("causedBy carries correlation, causation and trace context to the next event", () =>
    Effect.gen(function*() {
      const cause = yield* sample
      const next = yield* Envelope.make({ type: "shipping.requested", source: "/orders", subject: "order-42", data: {}, headers: Envelope.causedBy(cause) })
      expect(next.headers["correlation-id"]).toBe("corr-1")
      expect(next.headers["causation-id"]).toBe("evt-1")
      expect(next.headers.traceparent).toBe(cause.headers.traceparent)
      expect(Envelope.correlationId(next)).toBe("corr-1")
    }))

  const headerName = fc.oneof(
    fc.constantFrom("traceparent", "tracestate", "correlation-id", "causation-id", "x-tenant", "id", "data", "bulwarkattempt"),
    fc.stringMatching(/^[a-zA-Z0-9-]{1,24}$/)
  )

  it.effect.prop(
    "property: encode then decode is the identity for any data and headers",
    {
      data: fc.record({ orderId: fc.string(), amountCents: fc.integer() }),
      headers: fc.dictionary(headerName, fc.string()),
      subject: fc.string(),
      attempt: fc.nat(1000)
    },
    ({ data, headers, subject, attempt }) =>
      Effect.gen(function*() {
        const original = yield* Envelope.make({ type: "t", source: "s", subject, data, headers, attempt })
        const back = yield* decode(yield* encode(original))
        expect(back.data).toEqual(data)
        expect(back.headers).toEqual(headers)
        expect(back.subject).toBe(subject)
        expect(back.attempt).toBe(attempt)
      }),
    { fastCheck: { numRuns: 300 } }
  )

  it.effect.prop(
    "property: encodeEncoded and encode write the bytes of JSON.stringify(toCloudEvent), for any attributes, data and headers",
    {
      // Full Unicode, lone surrogates and characters JSON escapes included: the direct writer must quote as
      // JSON.stringify does or fall back to it.
      value: fc.oneof(fc.string({ unit: "binary" }), fc.string({ unit: "grapheme" }), fc.constantFrom("", "a\"b", "c\\d", "\n\u0001", "\ud800", "x\udc00y")),
      id: fc.string({ unit: "binary", minLength: 1 }),
      type: fc.string({ unit: "binary", minLength: 1 }),
      subject: fc.oneof(fc.constant(""), fc.string({ unit: "binary" })),
      dataschema: fc.option(fc.string({ unit: "binary" }), { nil: undefined }),
      headers: fc.oneof(fc.constant({}), fc.dictionary(headerName, fc.string())),
      attempt: fc.nat(1000),
      millis: fc.integer({ min: 0, max: 4_102_444_800_000 })
    },
    ({ value, id, type, subject, dataschema, headers, attempt, millis }) =>
      Effect.gen(function*() {
        const data = { orderId: value, amountCents: attempt }
        const envelope: Envelope.Envelope<typeof data> = {
          id,
          type,
          source: value === "" ? "s" : value,
          subject,
          time: DateTime.unsafeMake(millis),
          data,
          headers,
          attempt,
          ...(dataschema === undefined ? {} : { dataschema })
        }
        const stringified = JSON.stringify(yield* Envelope.toCloudEvent(OrderPaid)(envelope))
        const viaEffect = yield* encode(envelope)
        const direct = Envelope.encodeEncoded(envelope, yield* Schema.encode(OrderPaid)(data))
        expect(text.decode(direct)).toBe(stringified)
        expect(text.decode(viaEffect)).toBe(stringified)
      }),
    { fastCheck: { numRuns: 300 } }
  )

  it.effect.prop(
    "property: decoding arbitrary bytes never throws; it succeeds or fails with EnvelopeDecodeError",
    { raw: fc.oneof(fc.uint8Array({ maxLength: 200 }), fc.json().map((s) => bytes(s)), fc.anything().map((v) => bytes(JSON.stringify(v) ?? "null"))) },
    ({ raw }) =>
      Effect.gen(function*() {
        const result = yield* Effect.either(decode(raw))
        if (result._tag === "Left") {
          expect(result.left._tag).toBe("EnvelopeDecodeError")
          expect(result.left.raw).toBe(raw)
        }
      }),
    { fastCheck: { numRuns: 300 } }
  )
})
