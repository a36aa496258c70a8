import { Failure } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { PublishError, SubscribeError } from "../src/Transport.js"

describe("transport errors are classified", () => {
  it.effect("a broker's plain error (a lost connection) is transient, category dependency", () =>
    Effect.gen(function*() {
      const lost = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:4222"), { code: "ECONNREFUSED" })
      for (const error of [new PublishError({ topic: "orders", cause: lost }), new SubscribeError({ topic: "orders", cause: lost })]) {
        expect(Failure.isClassified(error)).toBe(true)
        expect(yield* Failure.classify(error)).toEqual({ classification: "transient", category: "dependency" })
      }
    }))

  it.effect("a driver's own classified cause keeps its verdict (a message the broker will never take is permanent)", () =>
    Effect.gen(function*() {
      const tooLarge = new Failure.PermanentError({ category: "schema", message: "message exceeds the broker's 1 MB limit" })
      expect(yield* Failure.classify(new PublishError({ topic: "orders", cause: tooLarge }))).toEqual({
        classification: "permanent",
        category: "schema"
      })
      const auth = new Failure.PermanentError({ category: "auth", message: "not authorised for the subject" })
      expect((yield* Failure.classify(new SubscribeError({ topic: "orders", cause: auth }))).classification).toBe("permanent")
    }))
})
