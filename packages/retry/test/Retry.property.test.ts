import { describe, expect, it } from "@effect/vitest"
import { Data, Duration, Effect, FastCheck as fc, Fiber, Random, Ref, TestClock } from "effect"
import * as Backoff from "../src/Backoff.js"
import * as Budget from "../src/Budget.js"
import * as Retry from "../src/Retry.js"

class Unavailable extends Data.TaggedError("Unavailable")<{ readonly status: 503 }> {}

const unit = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true })
const millis = fc.integer({ min: 1, max: 60_000 })

/** Steps a schedule `n` times with the given seed and returns the delays it chose, in millis. */
const delaysOf = (schedule: ReturnType<typeof Backoff.exponential>, n: number, seed: number) =>
  Effect.gen(function*() {
    let state = schedule.initial
    const out: Array<number> = []
    for (let i = 0; i < n; i++) {
      const [next, delay] = yield* schedule.step(0, undefined, state)
      state = next
      out.push(Duration.toMillis(delay))
    }
    return out
  }).pipe(Effect.withRandom(Random.make(seed)))

describe("jitter bounds", () => {
  it.prop("full jitter lies in [0, min(cap, base·2ⁿ)]", [millis, millis, fc.integer({ min: 0, max: 64 }), unit], ([base, cap, n, r]) => {
    const d = Backoff.fullJitterMillis(base, 2, cap, n, r)
    expect(d).toBeGreaterThanOrEqual(0)
    expect(d).toBeLessThanOrEqual(Math.min(cap, base * 2 ** n))
  })

  it.prop("equal jitter lies in [⌊t/2⌋, t] with t = min(cap, base·2ⁿ)", [millis, millis, fc.integer({ min: 0, max: 64 }), unit], ([base, cap, n, r]) => {
    const t = Math.min(cap, base * 2 ** n)
    const d = Backoff.equalJitterMillis(base, 2, cap, n, r)
    expect(d).toBeGreaterThanOrEqual(Math.floor(t / 2))
    expect(d).toBeLessThanOrEqual(t)
  })

  it.prop("decorrelated jitter lies in [min(base, cap), min(cap, 3·previous)]", [millis, millis, millis, unit], ([base, cap, previous, r]) => {
    const d = Backoff.decorrelatedJitterMillis(base, cap, previous, r)
    expect(d).toBeGreaterThanOrEqual(Math.floor(Math.min(base, cap)))
    expect(d).toBeLessThanOrEqual(Math.min(cap, Math.max(base, 3 * previous)))
  })

  it.effect.prop(
    "every schedule's delays stay within [0, cap] for any seed",
    [millis, millis, fc.constantFrom<Backoff.Jitter>("none", "full", "equal", "decorrelated"), fc.integer()],
    ([base, cap, jitter, seed]) =>
      Effect.gen(function*() {
        const delays = yield* delaysOf(Backoff.exponential({ base, cap, jitter }), 20, seed)
        for (const d of delays) {
          expect(d).toBeGreaterThanOrEqual(0)
          expect(d).toBeLessThanOrEqual(cap)
        }
        if (jitter === "none") expect(delays[0]).toBe(Math.min(base, cap))
      }),
    { fastCheck: { numRuns: 50 } }
  )
})

/** Runs an always-failing effect under `policy` to the end, advancing the test clock; answers attempt start times and the error. */
const exhaust = (policy: Retry.Policy, budget?: number) =>
  Effect.gen(function*() {
    const starts = yield* Ref.make<Array<number>>([])
    const attempt = Effect.flatMap(TestClock.currentTimeMillis, (now) => Ref.update(starts, (s) => (s.push(now), s))).pipe(
      Effect.zipRight(Effect.fail(new Unavailable({ status: 503 })))
    )
    const retried = Retry.retry(policy)(attempt)
    const fiber = yield* Effect.fork(Effect.flip(budget === undefined ? retried : Budget.withBudget(retried, budget)))
    yield* TestClock.adjust("100 days")
    const error = yield* Fiber.join(fiber)
    return { starts: yield* Ref.get(starts), error }
  })

describe("caps", () => {
  it.effect.prop(
    "an always-failing call is attempted exactly maxAttempts times",
    [fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 5_000 })],
    ([maxAttempts, delay]) =>
      Effect.gen(function*() {
        const { error, starts } = yield* exhaust(Retry.policy({ schedule: Backoff.constant(delay), maxAttempts }))
        expect(starts.length).toBe(maxAttempts)
        expect(error).toMatchObject({ _tag: "RetryExhausted", attempts: maxAttempts, reason: "attempts" })
      }),
    { fastCheck: { numRuns: 30 } }
  )

  it.effect.prop(
    "under a budget no attempt starts at or after the deadline, and the attempt count is what fits",
    [fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 20, max: 3_000 }), fc.integer()],
    ([budget, base, seed]) =>
      Effect.gen(function*() {
        const schedule = Backoff.exponential({ base, cap: "5 seconds", jitter: "equal" })
        const { error, starts } = yield* exhaust(Retry.policy({ schedule, maxAttempts: 1_000 }), budget).pipe(
          Effect.withRandom(Random.make(seed))
        )
        const start = starts[0]!
        for (const s of starts) expect(s - start).toBeLessThan(budget)
        expect(error).toBeInstanceOf(Budget.BudgetExhausted)
        const exhausted = error as Budget.BudgetExhausted
        expect(exhausted.attempts).toBe(starts.length)
        // The refused retry really would not have started in time.
        const last = starts[starts.length - 1]!
        expect(last - start + Duration.toMillis(exhausted.needed!)).toBeGreaterThanOrEqual(budget)
      }),
    { fastCheck: { numRuns: 30 } }
  )

  it.effect.prop(
    "maxDelay bounds every wait and maxElapsed bounds when the last attempt starts",
    [fc.integer({ min: 200, max: 2_000 }), fc.integer({ min: 1, max: 5_000 }), fc.integer()],
    ([maxDelay, maxElapsed, seed]) =>
      Effect.gen(function*() {
        const schedule = Backoff.exponential({ base: "50 millis", cap: "1 minute", jitter: "equal" })
        const { starts, error } = yield* exhaust(Retry.policy({ schedule, maxAttempts: 10_000, maxDelay, maxElapsed })).pipe(
          Effect.withRandom(Random.make(seed))
        )
        for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeLessThanOrEqual(maxDelay)
        expect(starts[starts.length - 1]! - starts[0]!).toBeLessThanOrEqual(maxElapsed)
        expect(error).toMatchObject({ _tag: "RetryExhausted", reason: "elapsed" })
      }),
    { fastCheck: { numRuns: 30 } }
  )
})
