/**
 * The end of a run: the numbers, and the checks that every effect happened exactly once. The checks
 * compare independent records — the load generator's answers, the order table, the counters, the shipping
 * provider's bookings and the dead-letter store — so a bug in one place shows up as a disagreement.
 */
import { renderEntry } from "@bulwark/audit/AuditLog"
import type { AuditLog, Failure } from "@bulwark/core"
import type { LoadReport } from "./Load.js"
import type { Booking, ShippingRecords } from "./Shipping.js"
import type { Counters } from "./Tally.js"

/** A dead-letter entry as the summary needs it. */
export interface DeadLetter {
  readonly messageId: string
  readonly originTopic: string
  readonly category: Failure.Category
  /** The order the message was about, when its payload says. */
  readonly orderId: string | undefined
}

/** Everything a run observed. */
export interface Observations {
  readonly setup: string
  readonly durationMillis: number
  /** Whether everything settled before the deadline. */
  readonly settled: boolean
  readonly planned: number
  /** Orders whose payment webhook was planned as a genuine, first payment. */
  readonly expectedPaid: ReadonlySet<string>
  readonly undeliverable: ReadonlySet<string>
  readonly load: LoadReport
  readonly counters: Counters
  readonly shipping: ShippingRecords
  readonly ordersByStatus: Readonly<Record<string, number>>
  /** Orders the database holds as paid. */
  readonly paidInDatabase: ReadonlySet<string>
  /** The dead-letter queue before the replay. */
  readonly deadLetters: ReadonlyArray<DeadLetter>
  /** Entries replayed once the shipping API was back. */
  readonly replayed: number
  /** The dead-letter queue at the end (entries awaiting triage). */
  readonly remaining: ReadonlyArray<DeadLetter>
  readonly breakerOpened: number
  /** The polled bank: every version it listed, and the latest version of each transfer at the end. */
  readonly polled: { readonly versions: ReadonlySet<string>; readonly latest: ReadonlyArray<string> }
  /** One event's story from the audit log, when it could be read. */
  readonly timeline: { readonly eventId: string; readonly entries: ReadonlyArray<AuditLog.Entry> } | undefined
}

/** One check and its verdict. */
export interface Check {
  readonly name: string
  readonly ok: boolean
  readonly detail: string
}

/** The summary of a run. */
export interface Summary {
  readonly observations: Observations
  readonly checks: ReadonlyArray<Check>
  /** Every check passed: the run's exit code is 0 exactly then. */
  readonly ok: boolean
  /** The headline numbers, for tests and other tools. */
  readonly numbers: {
    readonly received: number
    readonly accepted: number
    readonly duplicatesAtIngress: number
    readonly rejected: number
    readonly rejectedByReason: Readonly<Record<string, number>>
    readonly duplicatesSuppressed: number
    readonly ordersPaid: number
    readonly shippingCalls: number
    readonly retried: number
    readonly redeliveries: number
    readonly deadLettered: number
    readonly deadLetteredByCategory: Readonly<Record<string, number>>
    readonly replayed: number
    readonly awaitingTriage: number
    readonly awaitingTriageByCategory: Readonly<Record<string, number>>
    readonly shipmentsBooked: number
  }
}

const countBy = <A>(items: ReadonlyArray<A>, key: (a: A) => string): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const item of items) out[key(item)] = (out[key(item)] ?? 0) + 1
  return out
}

const sum = (values: Iterable<number>) => {
  let total = 0
  for (const v of values) total += v
  return total
}

const sample = (items: ReadonlyArray<string>) => items.slice(0, 3).join(", ") + (items.length > 3 ? ", …" : "")

/** Checks each customer's first-pass bookings follow the order service's commit sequence. */
const outOfOrder = (bookings: Iterable<Booking>, excluded: ReadonlySet<string>): Array<string> => {
  const last = new Map<string, number>()
  const problems: Array<string> = []
  for (const booking of bookings) {
    if (excluded.has(booking.orderId)) continue
    const previous = last.get(booking.customerId)
    if (previous !== undefined && booking.sequence < previous) {
      problems.push(`${booking.customerId}: #${booking.sequence} after #${previous}`)
    }
    last.set(booking.customerId, Math.max(previous ?? -1, booking.sequence))
  }
  return problems
}

/** Evaluates the checks over a run's observations. */
export const evaluate = (o: Observations): Summary => {
  const bookings = o.shipping.perOrder()
  const triage = new Map(o.remaining.filter((d) => d.orderId !== undefined).map((d) => [d.orderId!, d]))
  const everDeadLettered = new Set(o.deadLetters.flatMap((d) => (d.orderId === undefined ? [] : [d.orderId])))

  const paidTwice = [...o.counters.ordersPaid].filter(([, n]) => n > 1).map(([id]) => id)
  const notPaid = [...o.expectedPaid].filter((id) => !o.paidInDatabase.has(id))
  const paidWithoutCause = [...o.paidInDatabase].filter((id) => !o.expectedPaid.has(id))
  const unrecorded = [...o.paidInDatabase].filter((id) => o.counters.ordersPaid.get(id) !== 1)

  const shippedTwice = [...bookings].filter(([, n]) => n > 1).map(([id]) => id)
  const lost = [...o.paidInDatabase].filter((id) => (bookings.get(id) ?? 0) === 0 && !triage.has(id))
  const shippedAndQueued = [...o.paidInDatabase].filter((id) => (bookings.get(id) ?? 0) > 0 && triage.has(id))
  const shippedUnpaid = [...bookings.keys()].filter((id) => !o.paidInDatabase.has(id))
  const misfiled = [...triage.values()].filter((d) => d.orderId !== undefined && !o.undeliverable.has(d.orderId))
  const order = outOfOrder(o.shipping.bookings, everDeadLettered)
  const transfers = [...o.counters.transfersReceived]
  const transferTwice = transfers.filter(([, n]) => n > 1).map(([id]) => id)
  const transferUnknown = transfers.filter(([id]) => !o.polled.versions.has(id.slice("bank:".length))).map(([id]) => id)
  const transferMissed = o.polled.latest.filter((v) => !o.counters.transfersReceived.has(`bank:${v}`))
  const stages = new Set(o.timeline?.entries.map((e) => `${e.eventId === o.timeline!.eventId ? "own" : "caused"}:${e.stage}`))
  // received → published → processed, then the event it caused published by the relay and handled.
  const timelineWhole = o.timeline !== undefined &&
    ["own:received", "own:published", "own:processed", "caused:published"].every((s) => stages.has(s)) &&
    (stages.has("caused:processed") || stages.has("caused:dead-lettered"))

  const checks: Array<Check> = [
    {
      name: "everything settled",
      ok: o.settled && o.load.finished === o.planned && o.load.undelivered === 0,
      detail: !o.settled
        ? "the run did not settle before its deadline"
        : o.load.undelivered > 0
        ? `${o.load.undelivered} webhooks never got a final answer`
        : `${o.load.finished} of ${o.planned} webhooks answered, every delivery settled`
    },
    {
      name: "every payment paid its order exactly once",
      ok: paidTwice.length === 0 && notPaid.length === 0 && paidWithoutCause.length === 0 && unrecorded.length === 0,
      detail: paidTwice.length > 0
        ? `paid twice: ${sample(paidTwice)}`
        : notPaid.length > 0
        ? `accepted but never paid: ${sample(notPaid)}`
        : paidWithoutCause.length > 0
        ? `paid without a genuine payment: ${sample(paidWithoutCause)}`
        : unrecorded.length > 0
        ? `paid in the database but not by this run's handler: ${sample(unrecorded)}`
        : `${o.paidInDatabase.size} of ${o.expectedPaid.size} orders paid, each once`
    },
    {
      name: "every paid order shipped exactly once (or awaits triage)",
      ok: shippedTwice.length === 0 && lost.length === 0 && shippedAndQueued.length === 0 && misfiled.length === 0,
      detail: shippedTwice.length > 0
        ? `shipped twice: ${sample(shippedTwice)}`
        : lost.length > 0
        ? `paid, never shipped, not in the DLQ: ${sample(lost)}`
        : shippedAndQueued.length > 0
        ? `shipped and still in the DLQ: ${sample(shippedAndQueued)}`
        : misfiled.length > 0
        ? `in the DLQ although deliverable: ${sample(misfiled.map((d) => d.orderId!))}`
        : `${bookings.size} shipped once, ${triage.size} undeliverable in the DLQ`
    },
    {
      name: "no effect without a cause",
      ok: shippedUnpaid.length === 0,
      detail: shippedUnpaid.length === 0 ? "no shipment for an unpaid order" : `shipped but unpaid: ${sample(shippedUnpaid)}`
    },
    {
      name: "each customer's shipments follow payment order",
      ok: order.length === 0,
      detail: order.length === 0
        ? `${o.shipping.bookings.length - [...everDeadLettered].filter((id) => bookings.has(id)).length} first-pass shipments in order (replayed ones excluded)`
        : sample(order)
    },
    {
      name: "every polled bank transfer received exactly once",
      ok: transferTwice.length === 0 && transferUnknown.length === 0 && transferMissed.length === 0,
      detail: transferTwice.length > 0
        ? `received twice: ${sample(transferTwice)}`
        : transferMissed.length > 0
        ? `latest version never received: ${sample(transferMissed)}`
        : transferUnknown.length > 0
        ? `received a version the bank never listed: ${sample(transferUnknown)}`
        : `${transfers.length} versions of ${o.polled.latest.length} transfers, each once`
    },
    {
      name: "the audit log holds an event's whole timeline",
      ok: timelineWhole,
      detail: o.timeline === undefined
        ? "no event found in the audit log"
        : timelineWhole
        ? `${o.timeline.entries.length} entries for ${o.timeline.eventId} and the events it caused`
        : `incomplete: ${[...stages].join(", ")}`
    }
  ]

  const rejected = sum(o.load.rejected.values())
  return {
    observations: o,
    checks,
    ok: checks.every((c) => c.ok),
    numbers: {
      received: o.load.accepted + o.load.duplicates + rejected,
      accepted: o.load.accepted,
      duplicatesAtIngress: o.load.duplicates,
      rejected,
      rejectedByReason: Object.fromEntries(o.load.rejected),
      duplicatesSuppressed: o.load.duplicates + o.counters.paymentDuplicatesSkipped + o.counters.paymentDuplicatesAbsorbed +
        o.counters.shippingDuplicatesSkipped,
      ordersPaid: o.paidInDatabase.size,
      shippingCalls: o.shipping.calls,
      retried: o.counters.shippingRetries,
      redeliveries: o.counters.redeliveries,
      deadLettered: o.deadLetters.length,
      deadLetteredByCategory: countBy(o.deadLetters, (d) => d.category),
      replayed: o.replayed,
      awaitingTriage: o.remaining.length,
      awaitingTriageByCategory: countBy(o.remaining, (d) => d.category),
      shipmentsBooked: o.shipping.bookings.length
    }
  }
}

const row = (label: string, value: string | number, note = "") =>
  `  ${label.padEnd(44)}${String(value).padStart(8)}${note === "" ? "" : `   ${note}`}`

/** The summary as a text table. */
export const render = (summary: Summary): string => {
  const o = summary.observations
  const n = summary.numbers
  const lines: Array<string> = []
  lines.push("")
  lines.push(`Bulwark payments example — ${o.planned} webhooks in ${(o.durationMillis / 1000).toFixed(1)} s (${o.setup})`)
  lines.push("")
  lines.push("Ingress")
  lines.push(row("received (answered requests)", n.received, `${o.load.requests} requests, ${o.load.retried} retried by the sender, ${o.load.undelivered} never answered`))
  lines.push(row("accepted and persisted (202)", n.accepted))
  lines.push(row("duplicate event ids acknowledged (200)", n.duplicatesAtIngress))
  lines.push(row("rejected", n.rejected))
  for (const [reason, count] of Object.entries(n.rejectedByReason).sort()) lines.push(row(`  ${reason}`, count))
  lines.push("")
  lines.push("Duplicates suppressed")
  lines.push(row("  at the ingress (same event id)", n.duplicatesAtIngress))
  lines.push(row("  by the idempotency store (same payment)", o.counters.paymentDuplicatesSkipped))
  lines.push(row("  by the order's own row (already paid)", o.counters.paymentDuplicatesAbsorbed))
  lines.push(row("  redelivered OrderPaid skipped", o.counters.shippingDuplicatesSkipped))
  lines.push(row("  shipping calls answered by Idempotency-Key", o.shipping.keyReplays))
  lines.push("")
  lines.push("Shipping")
  lines.push(row("calls to the shipping API", n.shippingCalls, `${o.shipping.outageRejections} during the outage, ${o.shipping.slowAnswers} answered too late`))
  lines.push(row("retried (attempts after the first)", n.retried, `breaker opened ${o.breakerOpened}×`))
  lines.push(row("redelivered by the transport", n.redeliveries))
  lines.push(row("dead-lettered", n.deadLettered))
  for (const [category, count] of Object.entries(n.deadLetteredByCategory).sort()) lines.push(row(`  ${category}`, count))
  lines.push(row("replayed after the outage (dependency, timeout)", n.replayed))
  lines.push(row("left in the DLQ for triage", n.awaitingTriage, Object.entries(n.awaitingTriageByCategory).map(([c, k]) => `${c} ${k}`).join(", ")))
  lines.push("")
  lines.push("Effects applied")
  lines.push(row("orders paid (OrderPaid appended in the same tx)", n.ordersPaid))
  lines.push(row("shipments booked", n.shipmentsBooked))
  lines.push("")
  lines.push("Polled source (GET /payments?since=, no webhooks)")
  lines.push(row("transfer versions received", o.counters.transfersReceived.size, `${o.polled.latest.length} transfers, ${o.polled.versions.size} versions listed`))
  lines.push("")
  if (o.timeline !== undefined) {
    lines.push(`Timeline of ${o.timeline.eventId} (audit log; \`bulwark history show ${o.timeline.eventId}\`)`)
    for (const entry of o.timeline.entries) lines.push(`  ${renderEntry(entry, o.timeline.eventId)}`)
    lines.push("")
  }
  lines.push("Checks")
  for (const check of summary.checks) lines.push(`  ${check.ok ? "✔" : "✘"} ${check.name}: ${check.detail}`)
  lines.push("")
  lines.push(summary.ok ? "Every effect happened exactly once." : "EXACTLY-ONCE CHECK FAILED.")
  return lines.join("\n")
}
