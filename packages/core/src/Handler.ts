/**
 * Handlers and middleware.
 *
 * A `Handler` processes one envelope. A `Middleware` turns a handler into another handler, exactly like
 * Watermill's, and middleware compose with `pipe`: **the first one applied is the innermost**.
 *
 * ## Order matters — and is checked
 * Bulwark's own middleware declare a *stage*. From innermost to outermost the order is:
 *
 * | rank | stage | why here |
 * | --- | --- | --- |
 * | 0 | `timeout` | bounds **each attempt**; outside retry it would bound all attempts together |
 * | 1 | `breaker` | sees every attempt, so failures trip it and an open breaker fails fast inside retry |
 * | 2 | `rateLimit` | each attempt takes a permit; outside the breaker so its own throttling never trips it, and the last gate before the call so a permit is used the moment it is granted |
 * | 3 | `bulkhead` | bounds attempts in flight, permit waits included; a full bulkhead is local load, not a downstream fault, so the breaker never sees it |
 * | 4 | `hedge` | each hedged copy is a full attempt (its own timeout, breaker verdict, permit and slot) |
 * | 5 | `retry` | retries only what the inner stages report as transient |
 * | 6 | `fallback` | answers for what retry gave up on; inside idempotency so a fallback's success is recorded once |
 * | 7 | `idempotency` | claims once per delivery, releases on failure so a redelivery or replay can run |
 * | 8 | `deadLetter` | sees only what retry gave up on; outside idempotency so a replayed entry is not skipped as a duplicate |
 * | 9 | `tracing` | one span around everything, attempts as child events |
 *
 * `pipe(handler, timeout("2 seconds"), breaker(b), retry(p), idempotent(k), deadLetter(d))` is the
 * canonical stack. {@link checkOrder} (run by `Pipeline.run`) rejects a stack that breaks the order,
 * e.g. dead-letter inside retry (Watermill #580) or a timeout around all retries (cockatiel #107).
 */
import { Data, Duration, Effect } from "effect"
import type { Envelope } from "./Envelope.js"
import { Classified, ClassifiedTypeId, type Verdict } from "./Failure.js"

/** Processes one envelope; success means the message may be acknowledged. */
export type Handler<A, E = never, R = never> = (envelope: Envelope<A>) => Effect.Effect<void, E, R>

/** Turns a handler into another handler; compose with `pipe`, innermost first. */
export type Middleware<A, EIn, RIn, EOut = EIn, ROut = RIn> = (
  handler: Handler<A, EIn, RIn>
) => Handler<A, EOut, ROut>

/** The stages Bulwark's middleware declare, innermost first. */
export const stages = [
  "timeout",
  "breaker",
  "rateLimit",
  "bulkhead",
  "hedge",
  "retry",
  "fallback",
  "idempotency",
  "deadLetter",
  "tracing"
] as const
/** A middleware stage. */
export type Stage = typeof stages[number]

const StagesKey: unique symbol = Symbol.for("@bulwark/core/Handler/stages")

/** The stages wrapped around a handler so far, innermost first. */
export const stagesOf = (handler: Handler<any, any, any>): ReadonlyArray<Stage> =>
  (handler as { [StagesKey]?: ReadonlyArray<Stage> })[StagesKey] ?? []

/** Marks a handler as the result of wrapping `inner` in a stage, so the order can be checked. */
export const withStage = <H extends Handler<any, any, any>>(
  stage: Stage,
  inner: Handler<any, any, any>,
  outer: H
): H => Object.assign(outer, { [StagesKey]: [...stagesOf(inner), stage] })

/** A middleware stack whose stages are out of the documented order. */
export class MiddlewareOrderError extends Data.TaggedError("MiddlewareOrderError")<{
  readonly stages: ReadonlyArray<Stage>
  readonly inner: Stage
  readonly outer: Stage
}> {
  override get message(): string {
    return `middleware "${this.outer}" is applied inside "${this.inner}", but it must wrap it ` +
      `(order, innermost first: ${stages.join(" → ")}; got ${this.stages.join(" → ")})`
  }
}

/** Fails when a handler's stages break the documented order. */
export const checkOrder = (handler: Handler<any, any, any>): Effect.Effect<void, MiddlewareOrderError> => {
  const applied = stagesOf(handler)
  for (let i = 1; i < applied.length; i++) {
    const inner = applied[i - 1]!
    const outer = applied[i]!
    if (stages.indexOf(outer) < stages.indexOf(inner)) {
      return Effect.fail(new MiddlewareOrderError({ stages: applied, inner: outer, outer: inner }))
    }
  }
  return Effect.void
}

/** An attempt ran past its time limit. Transient, category `timeout`. */
export class HandlerTimeoutError extends Data.TaggedError("HandlerTimeoutError")<{
  readonly envelopeId: string
  readonly limit: Duration.Duration
}> implements Classified {
  get [ClassifiedTypeId](): Verdict {
    return { classification: "transient", category: "timeout" }
  }
  override get message(): string {
    return `handler for ${this.envelopeId} exceeded ${Duration.format(this.limit)}`
  }
}

/** Bounds each attempt of the handler (stage `timeout`); the attempt is interrupted and fails with {@link HandlerTimeoutError}. */
export const timeout = (limit: Duration.DurationInput) => {
  const duration = Duration.decode(limit)
  return <A, E, R>(handler: Handler<A, E, R>): Handler<A, E | HandlerTimeoutError, R> =>
    withStage("timeout", handler, (envelope: Envelope<A>) =>
      Effect.timeoutFail(handler(envelope), {
        duration,
        onTimeout: () => new HandlerTimeoutError({ envelopeId: envelope.id, limit: duration })
      }))
}

/** Builds a middleware from a function over the effect (for user middleware that needs no stage). */
export const around = <E2, R2>(
  f: <A, E, R>(effect: Effect.Effect<void, E, R>, envelope: Envelope<A>) => Effect.Effect<void, E | E2, R | R2>
) =>
<A, E, R>(handler: Handler<A, E, R>): Handler<A, E | E2, R | R2> => {
  const wrapped = (envelope: Envelope<A>) => f(handler(envelope), envelope)
  return Object.assign(wrapped, { [StagesKey]: stagesOf(handler) })
}
