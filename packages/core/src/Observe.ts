/**
 * One cheap hook through which Bulwark packages announce what they do: a breaker admitting a probe, a
 * retry starting, a key claimed, an entry dead-lettered, a delivery settled. Observers (the simulator's
 * invariant checks, audit logs, tests) are plain synchronous functions held in a `FiberRef`, so they follow
 * the work into forked fibers and cost a single `FiberRef` read per event when nobody listens.
 *
 * Observers are called synchronously in the emitting fiber, after the package has updated its own state,
 * so an observer sees the world as the event describes it. An observer must not throw: a throw is not
 * caught (that would hide a broken observer) and becomes a defect of the emitting fiber.
 *
 * The event catalogue (sources, kinds, attributes) is in `docs/observe.md`.
 */
import { Effect, FiberRef, Layer } from "effect"
import { globalValue } from "effect/GlobalValue"

/** One thing a Bulwark package did, for observers (the simulator, audit logs, tests). */
export interface Event {
  /** `"breaker" | "retry" | "idempotency" | "dead-letter" | "replay" | "webhook" | "sender" | "pipeline"`. */
  readonly source: string
  readonly kind: string
  readonly attributes: Readonly<Record<string, string | number | boolean | undefined>>
}

/** The attributes of an {@link Event}. */
export type Attributes = Event["attributes"]

/** Receives events synchronously, in the emitting fiber. Must not throw. */
export type Observer = (event: Event) => void

/** The observers of the current fiber (inherited by forked fibers). Default: none. */
export const currentObservers: FiberRef.FiberRef<ReadonlyArray<Observer>> = globalValue(
  Symbol.for("@bulwark/core/Observe/currentObservers"),
  () => FiberRef.unsafeMake<ReadonlyArray<Observer>>([])
)

const noAttributes: Attributes = Object.freeze({})

/**
 * Hands one event to `observers` now. For hot paths that already hold the fiber (`Effect.withFiberRuntime`)
 * and read {@link currentObservers} themselves: they build the event only when the list is not empty.
 */
export const unsafeNotify = (
  observers: ReadonlyArray<Observer>,
  source: string,
  kind: string,
  attributes: Attributes
): void => {
  const event: Event = { source, kind, attributes }
  for (let i = 0; i < observers.length; i++) observers[i]!(event)
}

/** Emits an event to the current fiber's observers; costs one FiberRef read when there are none. */
export const emit = (source: string, kind: string, attributes: Attributes = noAttributes): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) => {
    const observers = fiber.getFiberRef(currentObservers)
    if (observers.length !== 0) unsafeNotify(observers, source, kind, attributes)
    return Effect.void
  })

/** Like {@link emit}, but the attributes are built only when someone observes. */
export const emitWith = (source: string, kind: string, attributes: () => Attributes): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) => {
    const observers = fiber.getFiberRef(currentObservers)
    if (observers.length !== 0) unsafeNotify(observers, source, kind, attributes())
    return Effect.void
  })

/** Runs an effect with one more observer. */
export const observe = (observer: Observer) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.locallyWith(self, currentObservers, (observers) => [...observers, observer])

/** A layer that adds an observer for the scope of the layer's consumers. */
export const layer = (observer: Observer): Layer.Layer<never> =>
  Layer.fiberRefLocallyScopedWith(currentObservers, (observers) => [...observers, observer])
