import { describe, expect, it } from "@effect/vitest"
import { Cause, Data, Duration, Effect, ParseResult, Schema } from "effect"
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
