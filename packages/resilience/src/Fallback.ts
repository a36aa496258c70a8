/**
 * Fallbacks, typed: *which* failures (a refinement over the error type, e.g. {@link tags}) get *what* value
 * (an effect of the failure). The failures handled leave the error type; everything else — defects and
 * interruptions included — passes through unchanged.
 *
 * As handler middleware it is the `fallback` stage: outside retry (it answers for what retry gave up on,
 * not for each attempt) and inside idempotency (a delivery answered by its fallback is recorded as done
 * once, and not redone on redelivery).
 */
import { Handler, Observe, Telemetry } from "@bulwark/core"
import type { Envelope } from "@bulwark/core"
import { Effect, Metric } from "effect"

/** What a fallback handles and answers. */
export interface Options<E1, B, E2, R2> {
  /** Names the fallback in metrics and events. Default `"fallback"`. */
  readonly name?: string
  /** The failures handled: a refinement, e.g. {@link tags} or `(e): e is Unavailable => e instanceof Unavailable`. */
  readonly on: (error: unknown) => error is E1
  /** The value in their place. */
  readonly value: (error: E1) => Effect.Effect<B, E2, R2>
}

/** Counter of failures a fallback answered, tagged `fallback`. */
export const usedTotal = Metric.counter("bulwark_fallbacks_total", {
  description: "Failures answered by a fallback value",
  incremental: true
})

/** A refinement matching errors whose `_tag` is one of `names` (an `@bulwark/retry` `RetryExhausted` too, by its tag). */
export const tags = <const T extends ReadonlyArray<string>>(...names: T) =>
(error: unknown): error is { readonly _tag: T[number] } =>
  typeof error === "object" && error !== null && "_tag" in error && names.includes((error as { _tag: string })._tag)

/** Answers the failures `options.on` picks with `options.value`; they leave the error type. */
export const fallback = <E1, B, E2 = never, R2 = never>(options: Options<E1, B, E2, R2>) => {
  const name = options.name ?? "fallback"
  const used = Metric.tagged(usedTotal, "fallback", name)
  return <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A | B, Exclude<E, E1> | E2, R | R2> =>
    Effect.catchIf(self, (error): error is E & E1 => options.on(error), (error) =>
      Effect.zipRight(
        Effect.all([
          Metric.increment(used),
          Observe.emitWith("fallback", "used", () => ({ fallback: name, error: Telemetry.errorTypeOf(error) })),
          Telemetry.spanEvent("bulwark.fallback.used", { "bulwark.fallback.name": name, [Telemetry.Attr.errorType]: Telemetry.errorTypeOf(error) })
        ], { discard: true }),
        options.value(error)
      )) as Effect.Effect<A | B, Exclude<E, E1> | E2, R | R2>
}

/** The fallback as handler middleware (stage `fallback`); the value is an effect that settles the delivery. */
export const middleware = <E1, E2 = never, R2 = never>(
  options: Omit<Options<E1, void, E2, R2>, "value"> & {
    readonly value: (error: E1, envelope: Envelope.Envelope<unknown>) => Effect.Effect<void, E2, R2>
  }
) =>
<A, E, R>(handler: Handler.Handler<A, E, R>): Handler.Handler<A, Exclude<E, E1> | E2, R | R2> =>
  Handler.withStage("fallback", handler, (envelope: Envelope.Envelope<A>) =>
    fallback<E1, void, E2, R2>({
      ...options,
      value: (error) => options.value(error, envelope as Envelope.Envelope<unknown>)
    })(handler(envelope)))
