/**
 * The port a rate limiter keeps its state in. One store, many limiters and keys: every instance (fiber,
 * process, host) that reserves from the same store under the same key shares one limit.
 *
 * `reserve` is atomic: it reads the key's state, decides, and records a grant in one step on the store, so
 * the limit holds across instances. Drivers: {@link makeMemory} (in-process), `RateLimiterStore/Redis` (a Lua
 * script, atomic on the server) and `RateLimiterStore/Sql` (a row lock, PGlite or PostgreSQL).
 *
 * Times: the memory driver reads the Effect `Clock` in force where it is made (so `TestClock` and the
 * simulator drive it); the shared
 * drivers read the store's own clock, so instances on hosts whose clocks disagree still share one timeline.
 */
import { Failure } from "@bulwark/core"
import { Context, Data, Effect, Layer } from "effect"
import * as Algorithm from "./internal/algorithm.js"

/** A resolved limit rule (see `RateLimiter.Options`). */
export type Rule = Algorithm.Rule
/** A store's answer to a reservation: granted (proceed at `at`, after `waitMillis`) or refused (`retryAfterMillis`). */
export type Decision = Algorithm.Decision

/** The store could not be read or written. Transient, category `dependency`. */
export class RateLimiterStoreError extends Data.TaggedError("RateLimiterStoreError")<{
  readonly operation: string
  readonly key: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }
  override get message(): string {
    return `rate limiter store ${this.operation} of ${this.key} failed: ${String(this.cause)}`
  }
}

/** Limiter state shared by key. */
export class RateLimiterStore extends Context.Tag("@bulwark/resilience/RateLimiterStore")<RateLimiterStore, {
  /**
   * Atomically reserves `permits` under `rule` for `key` if they can be granted within `maxWaitMillis`;
   * a refusal changes nothing.
   */
  readonly reserve: (
    key: string,
    rule: Rule,
    permits: number,
    maxWaitMillis: number
  ) => Effect.Effect<Decision, RateLimiterStoreError>
  /**
   * Gives back `permits` granted for `at` to a caller that waited for them and gave up before its time
   * (interrupted), where that is safe (see the algorithms); a reservation that cannot be given back stays taken.
   */
  readonly release: (key: string, rule: Rule, permits: number, at: number) => Effect.Effect<void, RateLimiterStoreError>
  /**
   * The same decision as `reserve`, made synchronously, by stores that decide in-process: the limiter then
   * grants a free permit without running an effect of the store's.
   */
  readonly unsafeReserve?: (key: string, rule: Rule, permits: number, maxWaitMillis: number) => Decision
}>() {}

/** An in-process store: limiters over it in one process share their limits. */
export const makeMemory: Effect.Effect<RateLimiterStore["Type"]> = Effect.map(Effect.clock, (clock) => {
  // Each key remembers when its state stops mattering (it would grant exactly as a fresh one); such keys are
  // dropped now and then, so per-tenant keys do not accumulate.
  const states = new Map<string, { readonly state: Algorithm.State; horizon: number }>()
  let reservations = 0
  const sweep = (now: number) => {
    for (const [key, entry] of states) if (entry.horizon < now) states.delete(key)
  }
  // The clock in force where the store is made (a TestClock in tests, the simulator's), read synchronously:
  // reading it through the fiber's services per reservation would cost more than the reservation.
  const unsafeReserve = (key: string, rule: Algorithm.Rule, permits: number, maxWaitMillis: number): Decision => {
    const now = clock.unsafeCurrentTimeMillis()
    if (++reservations % 10_000 === 0) sweep(now)
    let entry = states.get(key)
    if (entry === undefined) {
      entry = { state: Algorithm.initial(), horizon: 0 }
      states.set(key, entry)
    }
    const decision = Algorithm.reserve(entry.state, rule, now, permits, maxWaitMillis)
    if (decision.granted) entry.horizon = Algorithm.horizon(entry.state, rule)
    return decision
  }
  return RateLimiterStore.of({
    reserve: (key, rule, permits, maxWaitMillis) => Effect.sync(() => unsafeReserve(key, rule, permits, maxWaitMillis)),
    release: (key, rule, permits, at) =>
      Effect.sync(() => {
        const entry = states.get(key)
        if (entry !== undefined && Algorithm.release(entry.state, rule, permits, at)) {
          entry.horizon = Algorithm.horizon(entry.state, rule)
        }
      }),
    unsafeReserve
  })
})

/** The in-process store as a layer. */
export const layerMemory: Layer.Layer<RateLimiterStore> = Layer.effect(RateLimiterStore, makeMemory)
