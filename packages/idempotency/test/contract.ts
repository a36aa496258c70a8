/** The contract every IdempotencyStore driver passes (real time: run with `excludeTestServices`). */
import { expect, layer } from "@effect/vitest"
import { Effect, FastCheck, Layer, Ref, Schema } from "effect"
import * as Store from "../src/IdempotencyStore.js"

let counter = 0
const uniqueKey = (name: string) => `contract-${name}-${Date.now().toString(36)}-${(counter++).toString(36)}-${Math.random().toString(36).slice(2, 8)}`

/** Registers the contract suite for one driver. */
export const suite = <E>(
  name: string,
  driver: Layer.Layer<Store.IdempotencyStore, E>,
  options: { readonly propertyRuns?: number } = {}
): void => {
  layer(driver, { excludeTestServices: true, timeout: "60 seconds" })(`IdempotencyStore contract: ${name}`, (it) => {
    it.effect("a fresh key is owned, completed once, then answers Completed with the outcome", () =>
      Effect.gen(function*() {
        const store = yield* Store.IdempotencyStore
        const key = uniqueKey("complete")
        const first = yield* store.claim(key, { lease: "10 seconds" })
        expect(first._tag).toBe("Fresh")
        if (first._tag !== "Fresh") return
        const second = yield* store.claim(key, { lease: "10 seconds" })
        expect(second._tag).toBe("InProgress")
        if (second._tag === "InProgress") {
          expect(second.leaseUntil).toBe(first.leaseUntil)
        }
        yield* store.complete(key, first.token, { charged: 42, currency: "EUR" })
        const third = yield* store.claim(key, { lease: "10 seconds" })
        expect(third).toEqual({ _tag: "Completed", outcome: { charged: 42, currency: "EUR" } })
        // Completing again (e.g. a slow duplicate of the owner) is rejected: the key is no longer in progress.
        const again = yield* Effect.flip(store.complete(key, first.token, "other"))
        expect(again._tag).toBe("LeaseLostError")
      }))

    it.effect("release after a failure lets the next attempt claim at once, with a larger token", () =>
      Effect.gen(function*() {
        const store = yield* Store.IdempotencyStore
        const key = uniqueKey("release")
        const first = yield* store.claim(key, { lease: "30 seconds" })
        if (first._tag !== "Fresh") return expect.fail("expected Fresh")
        yield* store.release(key, first.token)
        const second = yield* store.claim(key, { lease: "30 seconds" })
        if (second._tag !== "Fresh") return expect.fail("expected Fresh after release")
        expect(second.token).toBeGreaterThan(first.token)
        const stale = yield* Effect.flip(store.release(key, first.token))
        expect(stale._tag).toBe("LeaseLostError")
      }))

    it.effect("an expired lease is taken over; the old token can neither complete nor release", () =>
      Effect.gen(function*() {
        const store = yield* Store.IdempotencyStore
        const key = uniqueKey("lease")
        const dead = yield* store.claim(key, { lease: "150 millis" })
        if (dead._tag !== "Fresh") return expect.fail("expected Fresh")
        yield* Effect.sleep("400 millis")
        const taker = yield* store.claim(key, { lease: "10 seconds" })
        if (taker._tag !== "Fresh") return expect.fail(`expected takeover, got ${taker._tag}`)
        expect(taker.token).toBeGreaterThan(dead.token)
        expect((yield* Effect.flip(store.complete(key, dead.token, "late")))._tag).toBe("LeaseLostError")
        expect((yield* Effect.flip(store.release(key, dead.token)))._tag).toBe("LeaseLostError")
        yield* store.complete(key, taker.token, "taker")
        expect(yield* store.claim(key, { lease: "1 second" })).toEqual({ _tag: "Completed", outcome: "taker" })
      }))

    it.effect("a completed key is evicted after its retention and can run again", () =>
      Effect.gen(function*() {
        const store = yield* Store.IdempotencyStore
        const key = uniqueKey("retention")
        const kept = uniqueKey("retained")
        const claim = yield* store.claim(key, { lease: "5 seconds", retention: "200 millis" })
        if (claim._tag !== "Fresh") return expect.fail("expected Fresh")
        yield* store.complete(key, claim.token, "done")
        const long = yield* store.claim(kept, { lease: "5 seconds", retention: "1 minute" })
        if (long._tag !== "Fresh") return expect.fail("expected Fresh")
        yield* store.complete(kept, long.token, "kept")
        expect((yield* store.claim(key, { lease: "5 seconds" }))._tag).toBe("Completed")
        yield* Effect.sleep("500 millis")
        const purged = yield* store.purgeExpired
        expect(purged).toBeGreaterThanOrEqual(0)
        expect((yield* store.claim(key, { lease: "5 seconds" }))._tag).toBe("Fresh")
        expect(yield* store.claim(kept, { lease: "5 seconds" })).toEqual({ _tag: "Completed", outcome: "kept" })
      }))

    it.effect.prop(
      "K concurrent duplicates of one key run the effect exactly once and all get its outcome",
      [
        FastCheck.integer({ min: 2, max: 12 }),
        FastCheck.array(FastCheck.integer({ min: 0, max: 25 }), { minLength: 12, maxLength: 12 }),
        FastCheck.integer({ min: 0, max: 40 }),
        FastCheck.boolean()
      ],
      ([k, startDelays, workMillis, failFirst]) =>
        Effect.gen(function*() {
          const key = uniqueKey("race")
          const runs = yield* Ref.make(0)
          const work = Effect.gen(function*() {
            const n = yield* Ref.updateAndGet(runs, (x) => x + 1)
            yield* Effect.sleep(`${workMillis} millis`)
            // The first run may fail: the key is released and exactly one later caller runs it again.
            if (failFirst && n === 1) return yield* Effect.fail("first run failed" as const)
            return { run: n }
          })
          const results = yield* Effect.forEach(
            Array.from({ length: k }, (_, i) => i),
            (i) =>
              Effect.sleep(`${startDelays[i]!} millis`).pipe(
                Effect.zipRight(
                  Store.run(key, work, Schema.Struct({ run: Schema.Number }), {
                    lease: "10 seconds",
                    onInProgress: "wait",
                    maxWait: "10 seconds"
                  })
                ),
                Effect.either
              ),
            { concurrency: "unbounded" }
          )
          const total = yield* Ref.get(runs)
          const successes = results.filter((r) => r._tag === "Right").map((r) => r.right)
          const failures = results.filter((r) => r._tag === "Left").map((r) => r.left)
          if (failFirst) {
            expect(failures).toEqual(["first run failed"])
            // Only when some duplicate came after the failure does the work run a second time.
            expect(total).toBe(successes.length > 0 ? 2 : 1)
            for (const s of successes) expect(s).toEqual({ run: 2 })
          } else {
            expect(failures).toEqual([])
            expect(total).toBe(1)
            for (const s of successes) expect(s).toEqual({ run: 1 })
          }
        }),
      { fastCheck: { numRuns: options.propertyRuns ?? 15 } }
    )
  })
}
