/**
 * Hedging (Polly's, "The Tail at Scale"): when an attempt has run `delay` without answering, send another copy
 * — and, with `onFailure`, send one at once when an attempt fails — up to `maxHedges` extra copies. The first
 * success wins and the copies still running are interrupted (and awaited, so their finalizers have run when
 * the call returns). When every copy fails, the call fails with the last failure.
 *
 * Every hedge is an extra attempt: with a {@link RetryBudget.RetryBudget} it is sent only while the budget
 * allows (the call itself deposits once), so hedges and retries share one budget. Only hedge calls that are
 * safe to make twice: an idempotency key the downstream deduplicates on (the envelope id, an
 * `Idempotency-Key` header) makes the copies one effect.
 *
 * As handler middleware it is the `hedge` stage: inside retry, outside bulkhead, rate limit, breaker and
 * timeout, so each copy is a full attempt with its own slot, permit, breaker verdict and time limit. The
 * delay counts from when the latest copy got through those gates (its bulkhead slot, its permit), not from
 * when it was sent: a call that merely queues for a permit is throttled, not slow, and a hedge of it would
 * only take another permit. A copy interrupted while it waits for a permit gives it back where the store can.
 */
import { Handler, Observe, Telemetry } from "@bulwark/core"
import type { Envelope } from "@bulwark/core"
import { Cause, Clock, Duration, Effect, Exit, Fiber, Metric, Queue } from "effect"
import * as Attempt from "./internal/attempt.js"
import * as RetryBudget from "./RetryBudget.js"

/** Settings of hedging. */
export interface Options {
  /** Names the hedging in metrics and events. Default `"hedge"`. */
  readonly name?: string
  /** How long an attempt may run unanswered before a hedge is sent. */
  readonly delay: Duration.DurationInput
  /** Extra copies at most. Default 1. */
  readonly maxHedges?: number
  /** Send the next hedge as soon as an attempt fails (not only after `delay`). Default true. */
  readonly onFailure?: boolean
  /** The budget hedges spend from. Default: none (only `maxHedges` bounds them). */
  readonly budget?: RetryBudget.RetryBudget
}

/** Counter of hedges sent, tagged `hedge`. */
export const firedTotal = Metric.counter("bulwark_hedges_fired_total", { description: "Hedged copies sent", incremental: true })
/** Counter of calls a hedge (not the first copy) answered, tagged `hedge`. */
export const wonTotal = Metric.counter("bulwark_hedges_won_total", {
  description: "Hedged calls answered by a hedge rather than the first copy",
  incremental: true
})
/** Counter of hedges not sent because the retry budget was spent, tagged `hedge`. */
export const deniedTotal = Metric.counter("bulwark_hedges_denied_total", {
  description: "Hedges not sent because the retry budget was spent",
  incremental: true
})

/** Runs `self` hedged. */
export const hedge = (options: Options) => {
  const name = options.name ?? "hedge"
  const delay = Duration.decode(options.delay)
  const maxHedges = Math.max(0, Math.floor(options.maxHedges ?? 1))
  const onFailure = options.onFailure ?? true
  const budget = options.budget
  const fired = Metric.tagged(firedTotal, "hedge", name)
  const won = Metric.tagged(wonTotal, "hedge", name)
  const denied = Metric.tagged(deniedTotal, "hedge", name)
  const delayMillis = Duration.toMillis(delay)
  return <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.scoped(Effect.gen(function*() {
      if (budget !== undefined) yield* RetryBudget.deposit(budget)
      const events = yield* Queue.unbounded<Event<A, E>>()
      const fibers: Array<Fiber.RuntimeFiber<void>> = []
      // Per copy, how many gates it is waiting at; the hedge clock runs for the latest copy only while it
      // waits at none, from when it last got through one (or was sent).
      const gates: Array<number> = []
      let armedAt: number | undefined
      const launch = (copy: number) => {
        gates.push(0)
        const attempt: Attempt.Attempt = {
          waiting: () => void Queue.unsafeOffer(events, { _tag: "waiting", copy }),
          admitted: () => void Queue.unsafeOffer(events, { _tag: "admitted", copy })
        }
        const run = Effect.flatMap(
          Effect.exit(Effect.locally(self, Attempt.current, attempt)),
          (exit) => Effect.asVoid(Queue.offer(events, { _tag: "exit", copy, exit }))
        )
        return Effect.flatMap(Effect.forkScoped(run), (fiber) =>
          Effect.map(Clock.currentTimeMillis, (now) => {
            fibers.push(fiber)
            armedAt = now
          }))
      }
      // Whether one more copy may go: within maxHedges and, when a budget is set, paid for.
      const mayHedge = Effect.gen(function*() {
        if (fibers.length > maxHedges) return false
        if (budget !== undefined && !(yield* RetryBudget.tryWithdraw(budget))) {
          yield* Metric.increment(denied)
          return false
        }
        return true
      })
      const sendHedge = Effect.gen(function*() {
        const copy = fibers.length
        yield* launch(copy)
        yield* Metric.increment(fired)
        yield* Observe.emit("hedge", "fired", { hedge: name, copy })
        yield* Telemetry.spanEvent("bulwark.hedge.fired", { [Telemetry.Attr.hedge]: name, copy })
      })
      yield* launch(0)
      let running = 1
      let last: Cause.Cause<E> | undefined
      let exhausted = maxHedges === 0
      while (true) {
        const next: Event<A, E> | undefined = exhausted || running === 0 || armedAt === undefined
          ? yield* Queue.take(events)
          : yield* Effect.flatMap(Clock.currentTimeMillis, (now) =>
            Effect.timeoutTo(Queue.take(events), {
              duration: Duration.millis(Math.max(0, delayMillis - (now - armedAt!))),
              onSuccess: (x): Event<A, E> | undefined => x,
              onTimeout: () => undefined
            }))
        if (next === undefined) {
          // The latest copy ran the delay with no answer.
          if (yield* mayHedge) {
            yield* sendHedge
            running++
          } else exhausted = true
          continue
        }
        if (next._tag !== "exit") {
          const count = gates[next.copy]! + (next._tag === "waiting" ? 1 : -1)
          gates[next.copy] = count
          if (next.copy === fibers.length - 1) {
            if (count > 0) armedAt = undefined
            else armedAt = yield* Clock.currentTimeMillis
          }
          continue
        }
        const { copy, exit } = next
        running--
        if (Exit.isSuccess(exit)) {
          if (copy > 0) {
            yield* Metric.increment(won)
            yield* Observe.emit("hedge", "won", { hedge: name, copy })
            yield* Telemetry.spanEvent("bulwark.hedge.won", { [Telemetry.Attr.hedge]: name, copy })
          }
          // Closing the scope interrupts the copies still running and waits for them.
          return exit.value
        }
        last = exit.cause
        if (onFailure && !exhausted) {
          if (yield* mayHedge) {
            yield* sendHedge
            running++
          } else exhausted = true
        }
        if (running === 0) return yield* Effect.failCause(last)
      }
    }))
}

type Event<A, E> =
  | { readonly _tag: "exit"; readonly copy: number; readonly exit: Exit.Exit<A, E> }
  | { readonly _tag: "waiting" | "admitted"; readonly copy: number }

/** Hedging as handler middleware (stage `hedge`): copies of one attempt carry the same envelope (and id). */
export const middleware = (options: Options) => {
  const hedged = hedge(options)
  return <A, E, R>(handler: Handler.Handler<A, E, R>): Handler.Handler<A, E, R> =>
    Handler.withStage("hedge", handler, (envelope: Envelope.Envelope<A>) => hedged(handler(envelope)))
}
