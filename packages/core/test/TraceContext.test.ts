import { describe, expect, it } from "@effect/vitest"
import { Effect, Logger, Option } from "effect"
import * as Propagation from "../src/TraceContext.js"
import * as Redaction from "../src/Redaction.js"

describe("TraceContext", () => {
  it("parses version-00 traceparents and refuses what the W3C spec says to ignore", () => {
    const valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    expect(Propagation.parseTraceparent(valid)).toEqual(
      Option.some({ traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331", sampled: true })
    )
    expect(Propagation.formatTraceparent(Option.getOrThrow(Propagation.parseTraceparent(valid)))).toBe(valid)
    for (const invalid of [
      "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "00-00000000000000000000000000000000-b7ad6b7169203331-01",
      "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
      "garbage"
    ]) expect(Propagation.parseTraceparent(invalid)).toEqual(Option.none())
    // A later version may append fields.
    expect(Option.isSome(Propagation.parseTraceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-x"))).toBe(true)
  })

  it.effect("injects the current span and continues a remote parent with its tracestate", () =>
    Effect.gen(function*() {
      const headers = {
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate: "vendor=opaque"
      }
      const injected = yield* Propagation.inject({ other: "kept" }).pipe(
        Effect.withSpan("child"),
        Propagation.withRemoteParent(headers)
      )
      const parsed = Option.getOrThrow(Propagation.parseTraceparent(injected.traceparent))
      expect(parsed.traceId).toBe("0af7651916cd43dd8448eb211c80319c")
      expect(parsed.spanId).not.toBe("b7ad6b7169203331")
      expect(injected.tracestate).toBe("vendor=opaque")
      expect(injected.other).toBe("kept")
      // Outside any span nothing is invented.
      expect(yield* Propagation.currentHeaders).toEqual({})
    }))
})

describe("Redaction", () => {
  it("recognises secrets, signatures and user-marked keys", () => {
    for (const key of ["webhook-signature", "Stripe-Signature", "client_secret", "apiKey", "Authorization", "x-api-token"]) {
      expect(Redaction.isSensitive(key), key).toBe(true)
    }
    expect(Redaction.isSensitive("cardNumber")).toBe(false)
    expect(Redaction.isSensitive("card_number", ["cardNumber"])).toBe(true)
    expect(Redaction.omitSensitive({ id: "1", signature: "s", iban: "x" }, ["iban"])).toEqual({ id: "1" })
  })

  it.effect("masks sensitive log annotations, including user-marked ones", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const capture = Logger.make(({ annotations }) => void lines.push(JSON.stringify(Object.fromEntries(annotations))))
      yield* Effect.log("hello").pipe(
        Effect.annotateLogs({ secret: "whsec_abc", iban: "DE00", id: "evt_1" }),
        Effect.provide(Logger.replace(Logger.defaultLogger, Redaction.redacting(capture))),
        Effect.provide(Redaction.layerSensitiveKeys(["iban"]))
      )
      expect(lines.map((line) => JSON.parse(line))).toEqual([{ secret: "[REDACTED]", iban: "[REDACTED]", id: "evt_1" }])
    }))
})
