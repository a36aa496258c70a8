import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import * as Memory from "../src/IdempotencyStore/Memory.js"

describe("memory IdempotencyStore on the TestClock", () => {
  it.effect("a lease expires exactly at its end, not before", () =>
    Effect.gen(function*() {
      const store = yield* Memory.make()
      const first = yield* store.claim("k", { lease: "30 seconds" })
      if (first._tag !== "Fresh") return expect.fail("expected Fresh")
      yield* TestClock.adjust("29999 millis")
      const busy = yield* store.claim("k", { lease: "30 seconds" })
      expect(busy._tag).toBe("InProgress")
      if (busy._tag === "InProgress") expect(busy.leaseUntil - 29_999).toBe(1)
      yield* TestClock.adjust("1 millis")
      const taken = yield* store.claim("k", { lease: "30 seconds" })
      if (taken._tag !== "Fresh") return expect.fail("expected takeover")
      expect(taken.token).toBeGreaterThan(first.token)
      expect((yield* Effect.flip(store.complete("k", first.token, 1)))._tag).toBe("LeaseLostError")
    }))

  it.effect("eviction keeps memory bounded by the keys of one retention window", () =>
    Effect.gen(function*() {
      const store = yield* Memory.make({ sweepInterval: "1 second" })
      for (let i = 0; i < 500; i++) {
        const claim = yield* store.claim(`old-${i}`, { lease: "1 second", retention: "1 minute" })
        if (claim._tag === "Fresh") yield* store.complete(`old-${i}`, claim.token, i)
      }
      // Claimed but never completed (the worker died): evicted after lease + retention.
      yield* store.claim("abandoned", { lease: "1 second", retention: "1 minute" })
      expect(yield* store.size).toBe(501)
      yield* TestClock.adjust("59 seconds")
      yield* store.claim("probe-1", { lease: "1 second", retention: "1 minute" })
      expect(yield* store.size).toBe(502)
      yield* TestClock.adjust("2 seconds")
      yield* store.claim("probe-2", { lease: "1 second", retention: "1 minute" })
      expect(yield* store.size).toBe(2)
      expect((yield* store.claim("old-7", { lease: "1 second" }))._tag).toBe("Fresh")
    }))

  it.effect("purgeExpired evicts at once and answers how many", () =>
    Effect.gen(function*() {
      const store = yield* Memory.make({ sweepInterval: "1 hour" })
      const a = yield* store.claim("a", { lease: "1 second", retention: "10 seconds" })
      if (a._tag === "Fresh") yield* store.complete("a", a.token, "x")
      yield* TestClock.adjust("11 seconds")
      expect(yield* store.purgeExpired).toBe(1)
      expect(yield* store.size).toBe(0)
    }))

  it.effect("an outcome JSON cannot hold is a typed error, and the key stays owned", () =>
    Effect.gen(function*() {
      const store = yield* Memory.make()
      const claim = yield* store.claim("big", { lease: "10 seconds" })
      if (claim._tag !== "Fresh") return expect.fail("expected Fresh")
      const error = yield* Effect.flip(store.complete("big", claim.token, { amount: 10n }))
      expect(error._tag).toBe("IdempotencyStoreError")
      yield* store.complete("big", claim.token, { amount: "10" })
      expect(yield* store.claim("big", { lease: "1 second" })).toEqual({ _tag: "Completed", outcome: { amount: "10" } })
    }))
})

describe("memory IdempotencyStore bound", () => {
  it.effect("a long retention cannot grow the store past maxEntries; keys in progress are never evicted", () =>
    Effect.gen(function*() {
      const store = yield* Memory.make({ maxEntries: 100 })
      const held = yield* store.claim("held", { lease: "1 hour", retention: "7 days" })
      if (held._tag !== "Fresh") return expect.fail("expected Fresh")
      let largest = 0
      for (let i = 0; i < 2_000; i++) {
        const claim = yield* store.claim(`k-${i}`, { lease: "30 seconds", retention: "7 days" })
        if (claim._tag === "Fresh") yield* store.complete(`k-${i}`, claim.token, i)
        largest = Math.max(largest, yield* store.size)
      }
      expect(largest).toBeLessThanOrEqual(101)
      // The newest keys are still recognised, the oldest forgotten, the one in progress still owned.
      expect(yield* store.claim("k-1999", { lease: "1 second" })).toEqual({ _tag: "Completed", outcome: 1999 })
      expect((yield* store.claim("k-0", { lease: "1 second" }))._tag).toBe("Fresh")
      expect((yield* store.claim("held", { lease: "1 second" }))._tag).toBe("InProgress")
      yield* store.complete("held", held.token, "done")
    }))
})
