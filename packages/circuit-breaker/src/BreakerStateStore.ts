/**
 * The port through which breakers share state: N instances (processes) behind one downstream read and
 * update one snapshot per key, so they trip, probe and close together.
 *
 * `modify` is an atomic read-modify-write: the store hands `f` the current snapshot (or a fresh one from
 * `initial`), `f` mutates it and answers; the store commits the mutated snapshot and returns the answer.
 * A driver may call `f` more than once (compare-and-set retries), so `f` must only touch its argument.
 */
import { Failure } from "@bulwark/core"
import { Context, Data, Effect, Layer } from "effect"
import type { Snapshot } from "./internal/machine.js"

/** The store could not be read or written. Transient, category `dependency`. */
export class StoreError extends Data.TaggedError("StoreError")<{
  readonly operation: string
  readonly key: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }
  override get message(): string {
    return `breaker state store ${this.operation} of ${this.key} failed: ${String(this.cause)}`
  }
}

/** Breaker state shared by key. */
export class BreakerStateStore extends Context.Tag("@bulwark/circuit-breaker/BreakerStateStore")<BreakerStateStore, {
  /** Atomically applies `f` to the key's snapshot and commits the result. */
  readonly modify: <A>(key: string, initial: () => Snapshot, f: (snapshot: Snapshot) => A) => Effect.Effect<A, StoreError>
  /** The key's snapshot as stored, if any (a copy). */
  readonly get: (key: string) => Effect.Effect<Snapshot | undefined, StoreError>
}>() {}

/** An in-process store: breakers made over it in one process share state (and tests can share it). */
export const makeMemory: Effect.Effect<BreakerStateStore["Type"]> = Effect.sync(() => {
  const states = new Map<string, Snapshot>()
  return BreakerStateStore.of({
    modify: (key, initial, f) =>
      Effect.sync(() => {
        let snapshot = states.get(key)
        if (snapshot === undefined) {
          snapshot = initial()
          states.set(key, snapshot)
        }
        return f(snapshot)
      }),
    get: (key) => Effect.sync(() => {
      const snapshot = states.get(key)
      return snapshot === undefined ? undefined : structuredClone(snapshot)
    })
  })
})

/** The in-process store as a layer. */
export const layerMemory: Layer.Layer<BreakerStateStore> = Layer.effect(BreakerStateStore, makeMemory)
