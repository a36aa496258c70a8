/** The contract every BreakerStateStore driver must meet, run over each driver. */
import { describe, expect, it } from "@effect/vitest"
import { Data, Effect, Layer } from "effect"
import * as Breaker from "../src/Breaker.js"
import { BreakerStateStore } from "../src/BreakerStateStore.js"
import * as Machine from "../src/internal/machine.js"

class Unavailable extends Data.TaggedError("Unavailable")<{ readonly status: 503 }> {}

const config = Breaker.resolveOptions({ window: { kind: "consecutive", threshold: 5 } })
const unique = (name: string) => `${name}-${Date.now()}-${Math.random().toString(36).slice(2)}`

/** Registers the contract suite for a driver; `layer` must give every test a working store. */
export const suite = <E>(name: string, layer: Layer.Layer<BreakerStateStore, E>) =>
  describe(`BreakerStateStore contract: ${name}`, () => {
    it.live("modify creates from initial, commits the mutation and answers", () =>
      Effect.gen(function*() {
        const store = yield* BreakerStateStore
        const key = unique("create")
        expect(yield* store.get(key)).toBeUndefined()
        const answer = yield* store.modify(key, () => Machine.initial(config), (s) => {
          Machine.isolate(s)
          return s.state
        })
        expect(answer).toBe("isolated")
        expect((yield* store.get(key))?.state).toBe("isolated")
      }).pipe(Effect.provide(layer)))

    it.live("concurrent modifications are atomic: none is lost", () =>
      Effect.gen(function*() {
        const store = yield* BreakerStateStore
        const key = unique("atomic")
        yield* Effect.forEach(
          Array.from({ length: 25 }),
          () =>
            store.modify(key, () => Machine.initial(config), (s) => {
              if (s.window.kind === "consecutive") s.window.failures++
            }),
          { concurrency: 25, discard: true }
        )
        expect((yield* store.get(key))?.window).toEqual({ kind: "consecutive", failures: 25 })
      }).pipe(Effect.provide(layer)))

    it.live("N breaker instances over the store trip, reject and reset together", () =>
      Effect.gen(function*() {
        const key = unique("together")
        const options: Breaker.Options = { window: { kind: "count", size: 20 }, minimumCalls: 6, failureRateThreshold: 0.5 }
        const instances = yield* Effect.all(Array.from({ length: 4 }, () => Breaker.makeShared(key, options)))
        // Each instance alone sees too few calls to judge; together they cross the threshold.
        yield* Effect.forEach(instances, (b) => Effect.either(b.execute(Effect.fail(new Unavailable({ status: 503 })))), {
          concurrency: "unbounded"
        })
        for (const b of instances) expect(yield* b.state).toBe("closed")
        yield* Effect.forEach(instances.slice(0, 2), (b) => Effect.either(b.execute(Effect.fail(new Unavailable({ status: 503 })))), {
          concurrency: "unbounded"
        })
        for (const b of instances) {
          expect(yield* b.state).toBe("open")
          expect(yield* Effect.flip(b.execute(Effect.succeed(1)))).toBeInstanceOf(Breaker.BreakerOpen)
        }
        yield* instances[3]!.reset
        for (const b of instances) {
          expect(yield* b.state).toBe("closed")
          expect(yield* b.execute(Effect.succeed(1))).toBe(1)
        }
        const exported = yield* instances[0]!.toJSON
        expect(exported.window).toMatchObject({ kind: "count", calls: 4, failures: 0 })
      }).pipe(Effect.provide(layer)))
  })
