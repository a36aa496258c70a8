/**
 * What the run observed, counted where it happens, so the summary can be checked against itself: every
 * number in the table comes from here, from the shipping API's own records or from the database.
 */
import { Context, Effect, Layer } from "effect"

/** Counters of one run; mutated only through {@link Tally} effects. */
export class Counters {
  /** Payment envelopes whose delivery is final (acked or dead-lettered), by message id. */
  readonly paymentsSettled = new Set<string>()
  /** `OrderPaid` envelopes whose delivery is final, by message id. */
  readonly orderPaidSettled = new Set<string>()
  /** Orders this run marked paid, with how many times (must be 1 each). */
  readonly ordersPaid = new Map<string, number>()
  /** Payments the idempotency store recognised and skipped without running the order handler. */
  paymentDuplicatesSkipped = 0
  /** Payments for an order that the order's own row showed as already paid (the in-transaction guard). */
  paymentDuplicatesAbsorbed = 0
  /** `OrderPaid` deliveries the idempotency store recognised and skipped. */
  shippingDuplicatesSkipped = 0
  /** Attempts the shipping handler made, the first of each delivery included. */
  shippingAttempts = 0
  /** Attempts beyond the first within one delivery (the retry policy at work). */
  shippingRetries = 0
  /** Deliveries handed back to the transport for a later redelivery. */
  redeliveries = 0
  /** Polled bank transfer versions received by their consumer, by envelope id, with how many times. */
  readonly transfersReceived = new Map<string, number>()
  /** Deliveries the pipelines dead-lettered, by topic. */
  readonly deadLettered = new Map<string, number>()
}

/** The run's counters. */
export class Tally extends Context.Tag("@bulwark-examples/payments/Tally")<Tally, Counters>() {
  /** Fresh counters. */
  static readonly layer: Layer.Layer<Tally> = Layer.sync(Tally, () => new Counters())
}

/** Updates the counters. */
export const update = (f: (counters: Counters) => void): Effect.Effect<void, never, Tally> =>
  Effect.map(Tally, (counters) => f(counters))

/** Adds one to a per-key count. */
export const bump = (map: Map<string, number>, key: string): void => {
  map.set(key, (map.get(key) ?? 0) + 1)
}
