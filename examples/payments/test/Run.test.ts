/**
 * The main job in-process with a small load (PGlite in memory, memory transport): the summary must pass
 * its own checks, and its numbers must agree with each other and with the plan they came from.
 */
import { Capture } from "@bulwark/contracts"
import { Database } from "@bulwark/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as App from "../src/App.js"
import { contracts } from "../src/Contracts.js"
import * as Load from "../src/Load.js"
import * as Platform from "../src/Platform.js"
import * as Summary from "../src/Summary.js"

const load: Load.LoadOptions = { ...Load.defaultLoad, webhooks: 80, concurrency: 16, seed: 7, undeliverableRate: 0.03 }

describe("the payments run", () => {
  it.live("settles, passes its exactly-once checks, and its numbers add up", () =>
    Effect.gen(function*() {
      // Every schema the run uses is recorded: the declared contracts must cover all of them.
      const { result: observations, uses } = yield* Capture.capture(App.run({
        ...App.defaults,
        load,
        outage: { atShare: 0.3, duration: "800 millis" },
        slowEvery: 23,
        setup: "test"
      }))
      expect(Capture.undeclared(uses, contracts)).toEqual([])
      expect(uses.map((u) => `${u.role} ${u.topic} ${u.type ?? u.group}`).sort()).toEqual([
        "consume bank-transfers ledger",
        "consume order-paid shipping",
        "consume payments orders",
        "produce bank-transfers com.example.bank.transfer.changed",
        "produce order-paid com.example.order.paid",
        "produce payments com.acmepay.payment.succeeded",
        "produce payments com.stripe.payment_intent.succeeded"
      ])
      const summary = Summary.evaluate(observations)
      const n = summary.numbers
      const plan = Load.plan(load)
      const planned = (kind: Load.Kind) => plan.webhooks.filter((w) => w.kind === kind).length

      expect(summary.checks.filter((c) => !c.ok)).toEqual([])
      expect(summary.ok).toBe(true)

      // Ingress: every webhook got exactly one final answer, and each kind got the answer it deserves.
      expect(n.received).toBe(load.webhooks)
      expect(n.accepted + n.duplicatesAtIngress + n.rejected).toBe(n.received)
      expect(Object.values(n.rejectedByReason).reduce((a, b) => a + b, 0)).toBe(n.rejected)
      expect(n.rejectedByReason["401 NoMatchingSignature"] ?? 0).toBe(planned("forged"))
      expect(n.rejectedByReason["401 TimestampOutOfTolerance"] ?? 0).toBe(planned("stale"))
      expect(n.rejectedByReason["400 MalformedPayload"] ?? 0).toBe(planned("malformed"))
      expect(n.duplicatesAtIngress).toBe(planned("duplicate"))

      // Orders: every accepted event either paid its order or was recognised as a payment seen before.
      const c = observations.counters
      expect(n.ordersPaid).toBe(plan.payments)
      expect(n.accepted).toBe(n.ordersPaid + c.paymentDuplicatesSkipped + c.paymentDuplicatesAbsorbed)
      expect(c.paymentDuplicatesSkipped + c.paymentDuplicatesAbsorbed).toBe(planned("resend"))
      expect(observations.ordersByStatus["paid"]).toBe(n.ordersPaid)
      expect(observations.ordersByStatus["pending"] ?? 0).toBe(plan.orders.length - n.ordersPaid)

      // Shipping: each paid order is booked, or waits in the DLQ because its address is undeliverable.
      const undeliverable = plan.paidOrders.filter((id) => plan.undeliverable.has(id)).length
      expect(n.shipmentsBooked + n.awaitingTriage).toBe(n.ordersPaid)
      expect(n.awaitingTriage).toBe(undeliverable)
      // An undeliverable order caught by the outage is filed as `dependency` first, and as `schema` once replayed.
      expect(n.awaitingTriageByCategory).toEqual(undeliverable === 0 ? {} : { schema: undeliverable })
      expect(Object.values(n.deadLetteredByCategory).reduce((a, b) => a + b, 0)).toBe(n.deadLettered)
      expect(n.replayed).toBe((n.deadLetteredByCategory["dependency"] ?? 0) + (n.deadLetteredByCategory["timeout"] ?? 0))
      expect(n.shippingCalls).toBeGreaterThanOrEqual(n.shipmentsBooked)
      expect(observations.shipping.outageRejections).toBeGreaterThan(0)
      expect(n.retried).toBeGreaterThan(0)
    }).pipe(Effect.provide(Layer.merge(Database.layerPglite(), Platform.memoryTransport))))
})
