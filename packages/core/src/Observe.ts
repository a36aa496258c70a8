/**
 * One cheap hook through which Bulwark's packages say what they did (a breaker changed state, a retry
 * started, an idempotency key was claimed, a dead letter was stored). Observers are plain synchronous
 * functions held in a `FiberRef`, so forked fibers inherit them and a fiber with none pays one read.
 * The simulator checks its invariants on these events; tests and audit logs can read them too.
 */
import { Effect, FiberRef, Layer } from "effect"
import { globalValue } from "effect/GlobalValue"

/** One thing a Bulwark package did, for observers (the simulator, audit logs, tests). */
export interface Event {
  readonly source: string
  readonly kind: string
  readonly attributes: Readonly<Record<string, string | number | boolean | undefined>>
}

/** Receives events synchronously, in the emitting fiber. Must not throw. */
export type Observer = (event: Event) => void

const none: ReadonlyArray<Observer> = []

/** The observers of the current fiber (inherited by forked fibers). Default: none. */
export const currentObservers: FiberRef.FiberRef<ReadonlyArray<Observer>> = globalValue(
  Symbol.for("@bulwark/core/Observe/currentObservers"),
  () => FiberRef.unsafeMake(none)
)

const deliver = (observers: ReadonlyArray<Observer>, event: Event): void => {
  for (const observer of observers) observer(event)
}

/** Emits an event to the current fiber's observers; costs one FiberRef read when there are none. */
export const emit = (source: string, kind: string, attributes: Event["attributes"] = {}): Effect.Effect<void> =>
  FiberRef.getWith(currentObservers, (observers) =>
    observers.length === 0 ? Effect.void : Effect.sync(() => deliver(observers, { source, kind, attributes })))

/** Like {@link emit}, building the attributes only when somebody observes (allocation-free hot paths). */
export const emitWith = (source: string, kind: string, attributes: () => Event["attributes"]): Effect.Effect<void> =>
  FiberRef.getWith(currentObservers, (observers) =>
    observers.length === 0 ? Effect.void : Effect.sync(() => deliver(observers, { source, kind, attributes: attributes() })))

/** Runs an effect with one more observer. */
export const observe = (observer: Observer) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.locallyWith(self, currentObservers, (observers) => [...observers, observer])

/** A layer that adds an observer for the scope of the layer's consumers. */
export const layer = (observer: Observer): Layer.Layer<never> =>
  Layer.scopedDiscard(Effect.locallyScopedWith(currentObservers, (observers) => [...observers, observer]))
