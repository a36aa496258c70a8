/**
 * A keyed registry: one breaker per downstream (host, endpoint, tenant…), created on first use with a
 * shared configuration, so one failing endpoint does not open the breaker of its healthy neighbours.
 */
import type { Envelope } from "@bulwark/core"
import { Handler } from "@bulwark/core"
import { Effect } from "effect"
import * as Breaker from "./Breaker.js"
import { BreakerStateStore, type StoreError } from "./BreakerStateStore.js"

/** Breakers by key; `ES` is what their state store can fail with. */
export interface Registry<ES = never> {
  /** The breaker for `key`, created on first use. */
  readonly get: (key: string) => Effect.Effect<Breaker.Breaker<ES>, ES>
  /** Runs `self` through the breaker for `key`. */
  readonly execute: <A, E, R>(key: string, self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | Breaker.BreakerOpen | ES, R>
  /** The keys with a breaker so far. */
  readonly keys: Effect.Effect<ReadonlyArray<string>>
}

type Options = Omit<Breaker.Options, "initialState">

const fromFactory = <ES>(create: (key: string) => Effect.Effect<Breaker.Breaker<ES>, ES>) =>
  Effect.gen(function*() {
    const breakers = new Map<string, Breaker.Breaker<ES>>()
    const lock = yield* Effect.makeSemaphore(1)
    const get = (key: string): Effect.Effect<Breaker.Breaker<ES>, ES> => {
      const existing = breakers.get(key)
      if (existing !== undefined) return Effect.succeed(existing)
      // Creation is serialised so two first calls for a key cannot make two breakers.
      return lock.withPermits(1)(Effect.suspend(() => {
        const raced = breakers.get(key)
        if (raced !== undefined) return Effect.succeed(raced)
        return Effect.tap(create(key), (b) => Effect.sync(() => breakers.set(key, b)))
      }))
    }
    const registry: Registry<ES> = {
      get,
      execute: (key, self) => Effect.flatMap(get(key), (b) => b.execute(self)),
      keys: Effect.sync(() => [...breakers.keys()])
    }
    return registry
  })

/** A registry of in-process breakers. */
export const make = (options: Options = {}): Effect.Effect<Registry> =>
  fromFactory((key) => Effect.orDie(Breaker.make(key, options)))

/** A registry of breakers sharing state through the {@link BreakerStateStore}. */
export const makeShared = (options: Options = {}): Effect.Effect<Registry<StoreError>, never, BreakerStateStore> =>
  Effect.flatMap(BreakerStateStore, (store) =>
    fromFactory((key) =>
      // Without `initialState` the only invalid state is a stored one from another window kind: a
      // configuration bug across deployments, so it is a defect rather than a per-call error.
      Effect.catchIf(
        Effect.provideService(Breaker.makeShared(key, options), BreakerStateStore, store),
        (e): e is Breaker.InvalidBreakerState => e instanceof Breaker.InvalidBreakerState,
        (e) => Effect.die(e)
      )))

/** Middleware (stage `breaker`) choosing the breaker per envelope, e.g. by destination host. */
export const middleware = <ES>(registry: Registry<ES>, keyOf: (envelope: Envelope.Envelope<any>) => string) =>
<A, E, R>(handler: Handler.Handler<A, E, R>): Handler.Handler<A, E | Breaker.BreakerOpen | ES, R> =>
  Handler.withStage("breaker", handler, (envelope: Envelope.Envelope<A>) =>
    registry.execute(keyOf(envelope), handler(envelope)))
