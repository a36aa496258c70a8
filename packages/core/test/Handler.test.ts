import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, pipe, TestClock } from "effect"
import * as Envelope from "../src/Envelope.js"
import * as Failure from "../src/Failure.js"
import * as Handler from "../src/Handler.js"

const stage = (name: Handler.Stage) => <A, E, R>(inner: Handler.Handler<A, E, R>): Handler.Handler<A, E, R> =>
  Handler.withStage(name, inner, (envelope: Envelope.Envelope<A>) => inner(envelope))

const base: Handler.Handler<unknown> = () => Effect.void

describe("Handler", () => {
  it.effect("the canonical order passes the check", () =>
    Effect.gen(function*() {
      const stack = pipe(base, Handler.timeout("1 second"), stage("breaker"), stage("retry"), stage("idempotency"), stage("deadLetter"), stage("tracing"))
      expect(Handler.stagesOf(stack)).toEqual(["timeout", "breaker", "retry", "idempotency", "deadLetter", "tracing"])
      yield* Handler.checkOrder(stack)
    }))

  it.effect("dead-letter inside retry is rejected with an explanation (Watermill #580)", () =>
    Effect.gen(function*() {
      const wrong = pipe(base, stage("deadLetter"), stage("retry"))
      const error = yield* Effect.flip(Handler.checkOrder(wrong))
      expect(error._tag).toBe("MiddlewareOrderError")
      expect(error.message).toContain(`"deadLetter" is applied inside "retry"`)
    }))

  it.effect("a timeout around all retries is rejected (cockatiel #107)", () =>
    Effect.gen(function*() {
      const wrong = pipe(base, stage("retry"), Handler.timeout("5 seconds"))
      expect((yield* Effect.flip(Handler.checkOrder(wrong))).inner).toBe("timeout")
    }))

  it.effect("user middleware without a stage keeps the stages it wraps", () =>
    Effect.gen(function*() {
      const logged = Handler.around((effect) => Effect.tap(effect, () => Effect.void))
      const stack = pipe(base, stage("retry"), logged, stage("deadLetter"))
      expect(Handler.stagesOf(stack)).toEqual(["retry", "deadLetter"])
    }))

  it.effect("timeout interrupts a slow attempt with a transient timeout failure", () =>
    Effect.gen(function*() {
      const slow: Handler.Handler<unknown> = () => Effect.sleep("10 seconds")
      const envelope = yield* Envelope.make({ type: "t", source: "s", subject: "k", data: null })
      const fiber = yield* Effect.fork(Effect.flip(Handler.timeout("2 seconds")(slow)(envelope)))
      yield* TestClock.adjust("2 seconds")
      const error = yield* Fiber.join(fiber)
      expect(error._tag).toBe("HandlerTimeoutError")
      expect(yield* Failure.classify(error)).toEqual({ classification: "transient", category: "timeout" })
    }))
})
