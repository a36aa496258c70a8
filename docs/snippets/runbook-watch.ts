import { Outbox } from "@bulwark/outbox"
import { DeadLetterStore } from "@bulwark/dead-letter"
import { IdempotencyStore } from "@bulwark/idempotency"
import { Duration, Effect, Metric, Schedule } from "effect"

/** Your thresholds: page when the relay is behind, warn before that. */
const backlogWarn = 1_000
const lagPage = Duration.minutes(5)

declare const page: (summary: string) => Effect.Effect<void> // your pager

/** Reads what the relay reads for `bulwark_outbox_backlog` / `bulwark_outbox_lag_ms` and pages on it. */
export const watchOutbox = Effect.gen(function*() {
  const backlog = yield* Outbox.backlog
  const lag = yield* Outbox.lag
  if (Duration.greaterThanOrEqualTo(lag, lagPage)) {
    yield* page(`outbox lag ${Duration.format(lag)} (backlog ${backlog}): is a relay running and can it publish?`)
  } else if (backlog >= backlogWarn) {
    yield* Effect.logWarning(`outbox backlog ${backlog}, lag ${Duration.format(lag)}`)
  }
}).pipe(Effect.repeat(Schedule.spaced("30 seconds")))

/** Entries awaiting triage (the alert layer in dead-letter.ts pages on crossings of this). */
export const dlqDepth = Effect.flatMap(DeadLetterStore.DeadLetterStore, (store) => store.depth)

/** Duplicate-spike signal: hits per minute on completed keys, from the in-process counter. */
export const duplicatesPerMinute = Effect.gen(function*() {
  const hits = Metric.tagged(IdempotencyStore.hitsTotal, "state", "completed")
  const before = (yield* Metric.value(hits)).count
  yield* Effect.sleep("1 minute")
  const after = (yield* Metric.value(hits)).count
  return after - before
})
