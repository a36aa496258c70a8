import { Failure } from "@bulwark/core"
import { Backoff, Budget, Retry } from "@bulwark/retry"
import { Data, Effect } from "effect"

/** A card decline is the customer's problem: never retry it, dead-letter it as `unknown`. */
class CardDeclined extends Data.TaggedError("CardDeclined")<{ readonly orderId: string }> {}

/** A provider error that carries its HTTP status: `Failure.httpStatusRule` classifies it. */
class ProviderError extends Data.TaggedError("ProviderError")<{ readonly status: number }> {}

const charge = (orderId: string): Effect.Effect<string, CardDeclined | ProviderError> =>
  orderId === "" ? Effect.fail(new CardDeclined({ orderId })) : Effect.succeed(`ch_${orderId}`)

export const policy = Retry.policy({
  schedule: Backoff.exponential({ base: "200 millis", cap: "5 seconds", jitter: "full" }),
  maxAttempts: 5,
  maxElapsed: "20 seconds",
  overrides: [Failure.ruleForTag("CardDeclined", Failure.verdict("permanent", "unknown"))]
})

/** Retries 5xx/429 with jittered backoff, fails fast on a decline, never outlives the caller's budget. */
export const charged = (orderId: string) =>
  charge(orderId).pipe(
    Retry.retry(policy),
    Budget.withBudget("30 seconds")
  )

/** A nested call spends from the same budget instead of starting its own clock. */
export const lookup = (orderId: string) => Budget.bounded(charge(orderId))
