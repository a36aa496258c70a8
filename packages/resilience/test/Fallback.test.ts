import { describe, expect, it } from "@effect/vitest"
import { Data, Effect, Exit } from "effect"
import * as Fallback from "../src/Fallback.js"

class Unavailable extends Data.TaggedError("Unavailable")<{}> {}
class Invalid extends Data.TaggedError("Invalid")<{}> {}

describe("Fallback", () => {
  it.effect("answers the failures it names with its value; others, and defects, pass through", () =>
    Effect.gen(function*() {
      const quote = (e: Unavailable | Invalid | undefined) =>
        (e === undefined ? Effect.succeed(42) : Effect.fail(e)).pipe(
          Fallback.fallback({ on: Fallback.tags("Unavailable"), value: () => Effect.succeed(0) })
        )
      expect(yield* quote(undefined)).toBe(42)
      expect(yield* quote(new Unavailable())).toBe(0)
      // The handled failure left the error type: only Invalid remains.
      const invalid: Invalid = yield* Effect.flip(quote(new Invalid()))
      expect(invalid).toBeInstanceOf(Invalid)
      const defect = yield* Effect.exit(
        Effect.die("boom").pipe(Fallback.fallback({ on: Fallback.tags("Unavailable"), value: () => Effect.succeed(0) }))
      )
      expect(Exit.isFailure(defect)).toBe(true)
    }))

  it.effect("the value can fail with a typed error of its own", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Effect.fail(new Unavailable()).pipe(
          Fallback.fallback({ on: Fallback.tags("Unavailable"), value: () => Effect.fail(new Invalid()) })
        )
      )
      expect(error).toBeInstanceOf(Invalid)
    }))
})
