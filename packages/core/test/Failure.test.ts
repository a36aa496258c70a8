import { describe, expect, it } from "@effect/vitest"
import { Cause, Data, Duration, Effect, ParseResult, Schema, TestClock, TestContext } from "effect"
import * as Failure from "../src/Failure.js"

class CardDeclined extends Data.TaggedError("CardDeclined")<{ readonly code: string }> {}
class HttpError extends Data.TaggedError("HttpError")<{ readonly status: number; readonly retryAfter?: number }> {}

describe("Failure", () => {
  it.effect("classification and category are separate answers", () =>
    Effect.gen(function*() {
      expect(yield* Failure.classify(new HttpError({ status: 401 }))).toEqual({ classification: "permanent", category: "auth" })
      expect(yield* Failure.classify(new HttpError({ status: 403 }))).toEqual({ classification: "permanent", category: "auth" })
      expect(yield* Failure.classify(new HttpError({ status: 404 }))).toEqual({ classification: "permanent", category: "unknown" })
      expect(yield* Failure.classify(new HttpError({ status: 408 }))).toMatchObject({ classification: "transient", category: "timeout" })
      expect(yield* Failure.classify(new HttpError({ status: 503 }))).toMatchObject({ classification: "transient", category: "dependency" })
      expect(yield* Failure.classify({ response: { status: 502 } })).toMatchObject({ category: "dependency" })
      const parse = yield* Effect.flip(Schema.decodeUnknown(Schema.Number)("x"))
      expect(parse).toBeInstanceOf(ParseResult.ParseError)
      expect(yield* Failure.classify(parse)).toEqual({ classification: "permanent", category: "schema" })
      const timeout = new Cause.TimeoutException()
      expect(yield* Failure.classify(timeout)).toEqual({ classification: "transient", category: "timeout" })
    }))

  it.effect("an unknown failure is transient: retried, never silently dropped", () =>
    Effect.gen(function*() {
      expect(yield* Failure.classify(new Error("boom"))).toEqual(Failure.fallback)
      expect(Failure.fallback.classification).toBe("transient")
    }))

  it.effect("a 429 carries its retry-after hint", () =>
    Effect.gen(function*() {
      const verdict = yield* Failure.classify(new HttpError({ status: 429, retryAfter: 1500 }))
      expect(verdict.retryAfter && Duration.toMillis(verdict.retryAfter)).toBe(1500)
    }))

  it.effect("users classify their own errors with rules, innermost rules first", () =>
    Effect.gen(function*() {
      const declined = new CardDeclined({ code: "insufficient_funds" })
      expect(yield* Failure.classify(declined)).toEqual(Failure.fallback)
      const rules = [Failure.ruleForTag("CardDeclined", Failure.verdict("permanent", "unknown"))]
      expect(yield* Failure.classify(declined).pipe(Failure.withRules(rules))).toEqual({ classification: "permanent", category: "unknown" })
      // An override can even reclassify a built-in answer.
      const retryAuth = [Failure.ruleFor((e) => e instanceof HttpError && e.status === 401, Failure.verdict("transient", "auth"))]
      expect(yield* Failure.classify(new HttpError({ status: 401 })).pipe(Failure.withRules(retryAuth))).toEqual({
        classification: "transient",
        category: "auth"
      })
    }))

  it.effect("errors may classify themselves", () =>
    Effect.gen(function*() {
      const error = new Failure.PermanentError({ category: "schema", message: "bad field" })
      expect(yield* Failure.classify(error)).toEqual({ classification: "permanent", category: "schema" })
      const transient = new Failure.TransientError({ category: "dependency", message: "busy", retryAfter: Duration.seconds(3) })
      expect(yield* Failure.classify(transient)).toMatchObject({ classification: "transient", category: "dependency" })
    }))

  it.effect("a failure record survives encoding and is bounded", () =>
    Effect.gen(function*() {
      const record = yield* Failure.record(new HttpError({ status: 503 }))
      expect(record).toMatchObject({ tag: "HttpError", status: 503, category: "dependency", classification: "transient" })
      const json = JSON.stringify(yield* Schema.encode(Failure.FailureRecord)(record))
      const back = yield* Schema.decodeUnknown(Schema.parseJson(Failure.FailureRecord))(json)
      expect(back).toEqual(record)
      const huge = Failure.toRecord(new Error("x".repeat(100_000)), Failure.fallback)
      expect(huge.message.length).toBeLessThanOrEqual(4096)
    }))

  it.effect("a schema error keeps its fields in the record; any other error keeps only tag, message and stack", () =>
    Effect.gen(function*() {
      class Exhausted extends Schema.TaggedError<Exhausted>()("Exhausted", {
        attempts: Schema.Array(Schema.Struct({ status: Schema.Number, at: Schema.Number }))
      }) {}
      const kept = Failure.toRecord(new Exhausted({ attempts: [{ status: 503, at: 1 }, { status: 502, at: 2 }] }), Failure.fallback)
      expect(JSON.parse(kept.fields!)).toEqual({ _tag: "Exhausted", attempts: [{ status: 503, at: 1 }, { status: 502, at: 2 }] })
      class LoginFailed extends Data.TaggedError("LoginFailed")<{ readonly password: string }> {}
      const plain = Failure.toRecord(new LoginFailed({ password: "hunter2" }), Failure.fallback)
      expect(plain.fields).toBeUndefined()
      expect(JSON.stringify(yield* Schema.encode(Failure.FailureRecord)(plain))).not.toContain("hunter2")
    }))

  it.effect("classifyCause looks through the cause; defects are transient unknown", () =>
    Effect.gen(function*() {
      const failed = yield* Effect.exit(Effect.fail(new HttpError({ status: 401 })))
      const died = yield* Effect.exit(Effect.die(new Error("bug")))
      if (failed._tag !== "Failure" || died._tag !== "Failure") throw new Error("expected failures")
      expect((yield* Failure.classifyCause(failed.cause)).category).toBe("auth")
      expect(yield* Failure.classifyCause(died.cause)).toEqual(Failure.fallback)
    }))
})

describe("Retry-After from HTTP headers (RFC 9110 §10.2.3)", () => {
  // 2026-12-06T04:00:00Z, a Sunday.
  const now = Date.UTC(2026, 11, 6, 4, 0, 0)
  const table: ReadonlyArray<readonly [string, string | undefined, number | undefined]> = [
    ["delta-seconds", "120", 120_000],
    ["delta-seconds with surrounding spaces", "  7 ", 7_000],
    ["zero", "0", 0],
    ["leading zeros", "0030", 30_000],
    ["huge delta-seconds is bounded (2^31 s)", "9".repeat(400), 2 ** 31 * 1000],
    ["IMF-fixdate in the future", "Sun, 06 Dec 2026 04:01:30 GMT", 90_000],
    ["IMF-fixdate, lower case", "sun, 06 dec 2026 04:01:30 gmt", 90_000],
    ["obsolete RFC 850 date", "Sunday, 06-Dec-26 04:00:10 GMT", 10_000],
    ["asctime date", "Sun Dec  6 04:00:05 2026", 5_000],
    ["past IMF-fixdate is now", "Sun, 06 Nov 1994 08:49:37 GMT", 0],
    ["past RFC 850 date (two-digit year > 50 years ahead is the past)", "Sunday, 06-Nov-94 08:49:37 GMT", 0],
    ["negative number is ignored", "-5", undefined],
    ["fractional number is ignored", "3.5", undefined],
    ["exponent is ignored", "1e3", undefined],
    ["words are ignored", "soon", undefined],
    ["digits among words are ignored (Date.parse would accept)", "soon 1", undefined],
    ["a date without a time is ignored (Date.parse would accept)", "Sun, 06 Dec 2026", undefined],
    ["ISO-8601 is not an HTTP date", "2026-12-06T04:01:00Z", undefined],
    ["impossible date is ignored", "Tue, 31 Feb 2026 04:00:00 GMT", undefined],
    ["hour 25 is ignored", "Sun, 06 Dec 2026 25:00:00 GMT", undefined],
    ["two hints joined by Headers.get are ignored", "120, 60", undefined],
    ["empty", "", undefined],
    ["absent", undefined, undefined]
  ]

  it.each(table)("parseRetryAfter: %s", (_, value, expected) => {
    expect(Failure.parseRetryAfter(value, now)).toBe(expected)
  })

  class Upstream extends Data.TaggedError("Upstream")<{ readonly status: number; readonly headers: unknown }> {}
  const carriers: ReadonlyArray<readonly [string, (value: string) => unknown]> = [
    ["a Headers instance", (value) => new Upstream({ status: 503, headers: new Headers({ "Retry-After": value }) })],
    ["a plain record, lower-case name", (value) => new Upstream({ status: 503, headers: { "retry-after": value } })],
    ["a plain record, mixed-case name", (value) => new Upstream({ status: 429, headers: { "ReTrY-AfTeR": value } })],
    ["a node-style array value", (value) => new Upstream({ status: 429, headers: { "retry-after": [value, "1"] } })],
    ["response.headers (fetch/axios style)", (value) => ({ response: { status: 503, headers: new Headers({ "retry-after": value }) } })],
    ["a 504 (timeout)", (value) => new Upstream({ status: 504, headers: { "Retry-After": value } })]
  ]

  for (const [carrier, make] of carriers) {
    it.each(table.filter(([, value]) => value !== undefined))(`classify, header on ${carrier}: %s`, (_, value, expected) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(now)
        const verdict = yield* Failure.classify(make(value!))
        expect(verdict.classification).toBe("transient")
        expect(verdict.retryAfter === undefined ? undefined : Duration.toMillis(verdict.retryAfter)).toBe(expected)
      }).pipe(Effect.provide(TestContext.TestContext), Effect.runPromise))
  }

  it("classifyWith reads the wall clock when not given a time", () => {
    const inAMinute = new Date(Date.now() + 60_000).toUTCString()
    const verdict = Failure.classifyWith(Failure.defaultRules, new Upstream({ status: 503, headers: { "retry-after": inAMinute } }))
    const millis = Duration.toMillis(verdict.retryAfter!)
    expect(millis).toBeGreaterThan(55_000)
    expect(millis).toBeLessThanOrEqual(60_000)
  })

  it.effect("an explicit retryAfter property still wins over the header", () =>
    Effect.gen(function*() {
      const verdict = yield* Failure.classify({ status: 429, retryAfter: 1500, headers: { "retry-after": "60" } })
      expect(Duration.toMillis(verdict.retryAfter!)).toBe(1500)
    }))

  it.effect("a permanent status carries no hint, whatever the header says", () =>
    Effect.gen(function*() {
      expect(yield* Failure.classify(new Upstream({ status: 401, headers: { "retry-after": "60" } })))
        .toEqual({ classification: "permanent", category: "auth" })
    }))
})
