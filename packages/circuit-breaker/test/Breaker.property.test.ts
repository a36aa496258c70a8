import { describe, expect, it } from "@effect/vitest"
import { Data, Deferred, Effect, FastCheck as fc, Fiber, TestClock } from "effect"
import * as Breaker from "../src/Breaker.js"
import * as Machine from "../src/internal/machine.js"

class Unavailable extends Data.TaggedError("Unavailable")<{ readonly status: 503 }> {}

const event = fc.record({ dt: fc.integer({ min: 0, max: 2_500 }), failure: fc.boolean(), slow: fc.boolean() })

describe("window arithmetic", () => {
  it.prop(
    "a count window always equals the last N outcomes",
    [fc.integer({ min: 1, max: 20 }), fc.array(event, { maxLength: 200 })],
    ([size, events]) => {
      const config: Machine.WindowConfig = { kind: "count", size }
      const w = Machine.emptyWindow(config)
      const seen: Array<{ failure: boolean; slow: boolean }> = []
      for (const e of events) {
        Machine.recordInWindow(w, config, 0, e.failure, e.slow)
        seen.push(e)
        const last = seen.slice(-size)
        expect(Machine.aggregate(w, 0)).toEqual({
          calls: last.length,
          failures: last.filter((x) => x.failure).length,
          slow: last.filter((x) => x.slow).length
        })
      }
    }
  )

  it.prop(
    "a time window always equals the outcomes of the last N whole seconds",
    [fc.integer({ min: 1, max: 15 }), fc.array(event, { maxLength: 200 }), fc.integer({ min: 0, max: 10_000_000 })],
    ([seconds, events, start]) => {
      const config: Machine.WindowConfig = { kind: "time", seconds }
      const w = Machine.emptyWindow(config)
      const seen: Array<{ t: number; failure: boolean; slow: boolean }> = []
      let now = start
      const expected = (at: number) => {
        const inWindow = seen.filter((x) => Math.floor(x.t / 1000) > Math.floor(at / 1000) - seconds)
        return {
          calls: inWindow.length,
          failures: inWindow.filter((x) => x.failure).length,
          slow: inWindow.filter((x) => x.slow).length
        }
      }
      for (const e of events) {
        now += e.dt
        Machine.recordInWindow(w, config, now, e.failure, e.slow)
        seen.push({ t: now, ...e })
        expect(Machine.aggregate(w, now)).toEqual(expected(now))
      }
      // Reading later, with no new calls, forgets what has aged out.
      expect(Machine.aggregate(w, now + 3_000)).toEqual(expected(now + 3_000))
    }
  )

  it.prop(
    "the trip decision is the rate rule over the window",
    [
      fc.integer({ min: 1, max: 20 }),
      fc.integer({ min: 1, max: 25 }),
      fc.double({ min: 0.01, max: 1, noNaN: true }),
      fc.double({ min: 0.01, max: 1, noNaN: true }),
      fc.array(event, { maxLength: 60 })
    ],
    ([size, minimumCalls, failureRateThreshold, slowCallRateThreshold, events]) => {
      const config: Machine.Config = {
        ...Breaker.resolveOptions({ window: { kind: "count", size }, minimumCalls, failureRateThreshold, slowCallRateThreshold, slowCallDuration: 1 })
      }
      const w = Machine.emptyWindow(config.window)
      for (const e of events) {
        Machine.recordInWindow(w, config.window, 0, e.failure, e.slow)
        const { calls, failures, slow } = Machine.aggregate(w, 0)
        const expected = calls >= Math.min(size, minimumCalls) &&
          (failures / calls >= failureRateThreshold || slow / calls >= slowCallRateThreshold)
        expect(Machine.shouldTrip(config, w, 0)).toBe(expected)
      }
    }
  )
})

type Op = { readonly kind: "start" } | { readonly kind: "finish"; readonly pick: number; readonly success: boolean }
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.constant<Op>({ kind: "start" }),
  fc.record({ kind: fc.constant("finish" as const), pick: fc.nat(), success: fc.boolean() })
)

describe("half-open admission", () => {
  it.effect.prop(
    "under any interleaving of concurrent calls, half-open never admits more than the permitted probes",
    [fc.integer({ min: 1, max: 5 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.array(op, { minLength: 1, maxLength: 30 })],
    ([permittedProbes, probeSuccessRatio, ops]) =>
      Effect.gen(function*() {
        const b = yield* Breaker.make("probe", {
          window: { kind: "consecutive", threshold: 1 },
          openDuration: "1 second",
          permittedProbes,
          probeSuccessRatio
        })
        yield* Effect.either(b.execute(Effect.fail(new Unavailable({ status: 503 }))))
        yield* TestClock.adjust("1 second") // open time over: the next call is a probe
        let probesStarted = 0
        let maxAdmitted = 0
        const pending: Array<Deferred.Deferred<boolean>> = []
        const fibers: Array<Fiber.RuntimeFiber<unknown, unknown>> = []
        const settle = Effect.repeatN(Effect.yieldNow(), 5)
        for (const o of ops) {
          if (o.kind === "start") {
            const gate = yield* Deferred.make<boolean>()
            const call = Effect.gen(function*() {
              if ((yield* b.state) === "half-open") probesStarted++
              const success = yield* Deferred.await(gate)
              if (!success) return yield* Effect.fail(new Unavailable({ status: 503 }))
            })
            pending.push(gate)
            fibers.push(yield* Effect.fork(b.execute(call)))
          } else if (pending.length > 0) {
            const [gate] = pending.splice(o.pick % pending.length, 1)
            yield* Deferred.succeed(gate!, o.success)
          }
          yield* settle
          const snapshot = yield* b.toJSON
          maxAdmitted = Math.max(maxAdmitted, snapshot.probes.admitted)
          expect(snapshot.probes.admitted).toBeLessThanOrEqual(permittedProbes)
        }
        for (const gate of pending) yield* Deferred.succeed(gate, true)
        yield* Effect.forEach(fibers, Fiber.await, { discard: true })
        expect(probesStarted).toBeLessThanOrEqual(permittedProbes)
        expect(maxAdmitted).toBeLessThanOrEqual(permittedProbes)
      }),
    { fastCheck: { numRuns: 50 } }
  )
})
