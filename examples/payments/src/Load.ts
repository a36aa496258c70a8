/**
 * The load generator plays both payment providers: it plans a workload from a seed (so a run can be
 * repeated), then sends every webhook signed as its provider would, over real HTTP, and retries what a
 * real provider retries (409, 5xx, a broken connection).
 *
 * The plan mixes in what providers and attackers really send: exact re-deliveries (same event id), the
 * same payment re-sent as a new event, forged signatures, stale timestamps and bodies the schema rejects.
 */
import { Signing } from "@bulwark/webhook"
import { Clock, Data, Duration, Effect, Schedule } from "effect"
import type { NewOrder } from "./Orders.js"
import { acmePayPath, type Secrets, stripePath } from "./Webhooks.js"

/** The workload's shape; every rate is a share of the planned webhooks. */
export interface LoadOptions {
  /** Webhooks to send (re-sends included). */
  readonly webhooks: number
  /** Requests in flight at once. */
  readonly concurrency: number
  /** Seed of the plan. */
  readonly seed: number
  readonly duplicateRate: number
  readonly resendRate: number
  readonly forgedRate: number
  readonly staleRate: number
  readonly malformedRate: number
  /** Share of orders whose address the shipping API rejects. */
  readonly undeliverableRate: number
}

/** The defaults behind `npm start`. */
export const defaultLoad: LoadOptions = {
  webhooks: 2500,
  concurrency: 32,
  seed: 42,
  duplicateRate: 0.06,
  resendRate: 0.02,
  forgedRate: 0.03,
  staleRate: 0.01,
  malformedRate: 0.01,
  undeliverableRate: 0.01
}

/** What one planned webhook is. */
export type Kind = "payment" | "duplicate" | "resend" | "forged" | "stale" | "malformed"

/** One webhook to send. */
export interface Planned {
  readonly kind: Kind
  readonly provider: "acmepay" | "stripe"
  /** The provider's event id (`webhook-id`, or the Stripe event's `id`). */
  readonly eventId: string
  readonly body: string
}

/** The whole workload: the orders the shop holds before payments arrive, and the webhooks. */
export interface Plan {
  readonly orders: ReadonlyArray<NewOrder>
  readonly webhooks: ReadonlyArray<Planned>
  /** Orders whose address the shipping API will reject. */
  readonly undeliverable: ReadonlySet<string>
  /** Distinct payments that should end up paying their order. */
  readonly payments: number
  /** The orders those payments pay. */
  readonly paidOrders: ReadonlyArray<string>
}

// A small seeded generator: the plan must not depend on anything but the seed.
const mulberry32 = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const pad = (n: number) => String(n).padStart(6, "0")

const acmeBody = (paymentId: string, orderId: string, customerId: string, amount: number) =>
  JSON.stringify({ type: "payment.succeeded", data: { paymentId, orderId, customerId, amount, currency: "EUR" } })

const stripeBody = (eventId: string, paymentId: string, orderId: string, customerId: string, amount: number) =>
  JSON.stringify({
    id: eventId,
    object: "event",
    type: "payment_intent.succeeded",
    data: { object: { id: paymentId, amount, currency: "eur", metadata: { order_id: orderId, customer_id: customerId } } }
  })

/** Plans the workload (pure: the same options give the same plan). */
export const plan = (options: LoadOptions): Plan => {
  const random = mulberry32(options.seed)
  const customers = Math.max(1, Math.ceil(options.webhooks / 10))
  const orders: Array<NewOrder> = []
  const undeliverable = new Set<string>()
  const webhooks: Array<Planned> = []
  const paid: Array<{ index: number; planned: Planned; payment: { paymentId: string; orderId: string; customerId: string; amount: number } }> = []
  let events = 0
  let earlier = 0
  const nextEventId = (provider: "acmepay" | "stripe") => `${provider === "stripe" ? "evt" : "msg"}_${pad(++events)}`
  const thresholds = [
    ["duplicate", options.duplicateRate],
    ["resend", options.resendRate],
    ["forged", options.forgedRate],
    ["stale", options.staleRate],
    ["malformed", options.malformedRate]
  ] as const
  for (let i = 0; i < options.webhooks; i++) {
    let draw = random()
    let kind: Kind = "payment"
    for (const [candidate, rate] of thresholds) {
      if (draw < rate) {
        kind = candidate
        break
      }
      draw -= rate
    }
    // A re-delivery needs an earlier payment that has most likely been answered already. `paid` is in
    // index order, so those are a prefix of it (counted, not filtered: a filter per webhook made planning
    // 100 000 webhooks quadratic).
    while (earlier < paid.length && paid[earlier]!.index < i - 2 * options.concurrency) earlier++
    if ((kind === "duplicate" || kind === "resend") && earlier === 0) kind = "payment"
    const provider = random() < 0.5 ? "acmepay" : "stripe"
    if (kind === "duplicate") {
      const original = paid[Math.floor(random() * earlier)]!
      webhooks.push({ ...original.planned, kind })
      continue
    }
    if (kind === "resend") {
      const original = paid[Math.floor(random() * earlier)]!
      const { paymentId, orderId, customerId, amount } = original.payment
      const eventId = nextEventId(original.planned.provider)
      const body = original.planned.provider === "stripe"
        ? stripeBody(eventId, paymentId, orderId, customerId, amount)
        : acmeBody(paymentId, orderId, customerId, amount)
      webhooks.push({ kind, provider: original.planned.provider, eventId, body })
      continue
    }
    const customerId = `cus_${pad(Math.floor(random() * customers))}`
    const amount = 500 + Math.floor(random() * 20_000)
    const orderId = `ord_${pad(i)}`
    const paymentId = `${provider === "stripe" ? "pi" : "pay"}_${pad(i)}`
    const eventId = nextEventId(provider)
    // A malformed body is signed correctly; only the schema can refuse it.
    const body = kind === "malformed"
      ? (provider === "stripe" ? stripeBody(eventId, paymentId, orderId, customerId, -amount) : acmeBody(paymentId, orderId, customerId, -amount))
      : provider === "stripe"
      ? stripeBody(eventId, paymentId, orderId, customerId, amount)
      : acmeBody(paymentId, orderId, customerId, amount)
    const planned: Planned = { kind, provider, eventId, body }
    webhooks.push(planned)
    // Every webhook references a real order: a forged or refused payment leaves it pending.
    orders.push({ orderId, customerId, amount, currency: "EUR" })
    if (kind === "payment") {
      paid.push({ index: i, planned, payment: { paymentId, orderId, customerId, amount } })
      if (random() < options.undeliverableRate) undeliverable.add(orderId)
    }
  }
  return { orders, webhooks, undeliverable, payments: paid.length, paidOrders: paid.map((p) => p.payment.orderId) }
}

/** What the providers saw. */
export class LoadReport {
  /** Webhooks finished (answered with a final status, or given up on). */
  finished = 0
  /** Requests made, retries included. */
  requests = 0
  /** 202: accepted and persisted. */
  accepted = 0
  /** 200: a repeated event id, acknowledged without persisting it again. */
  duplicates = 0
  /** Final refusals by status and error tag, e.g. `401 NoMatchingSignature`. */
  readonly rejected = new Map<string, number>()
  /** Attempts that failed retryably (409 in flight, 5xx, connection errors). */
  retried = 0
  /** Webhooks given up on after every retry. */
  undelivered = 0
}

/** The HTTP request could not be made or answered. */
export class SendError extends Data.TaggedError("SendError")<{ readonly cause: unknown }> {
  override get message(): string {
    return `webhook request failed: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** An answer that means "try again later". */
class RetryableAnswer extends Data.TaggedError("RetryableAnswer")<{ readonly status: number }> {}

const encoder = new TextEncoder()
const staleBy = 10 * 60

const post = (url: string, headers: Record<string, string>, body: Uint8Array) =>
  Effect.tryPromise({
    try: async (signal) => {
      const response = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body, signal })
      return { status: response.status, text: await response.text() }
    },
    catch: (cause) => new SendError({ cause })
  })

/** The secret an attacker signs with: not one the ingress knows. */
const forgerySecrets: Secrets = { acmepay: [Signing.generateSecret()], stripe: ["whsec_not_the_endpoint_secret"] }

/** Signs a planned webhook as its provider (or the forger) would, at the current time. */
const sign = (planned: Planned, secrets: Secrets, body: Uint8Array) =>
  Effect.gen(function*() {
    const keys = planned.kind === "forged" ? forgerySecrets : secrets
    const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
    const timestamp = planned.kind === "stale" ? now - staleBy : now
    if (planned.provider === "stripe") {
      return { "stripe-signature": yield* Signing.stripe(keys.stripe, body, timestamp) } as Record<string, string>
    }
    const headers = yield* Signing.standard(keys.acmepay, { body, id: planned.eventId, timestamp })
    return { ...headers } as Record<string, string>
  })

const errorTag = (text: string): string => {
  try {
    const parsed = JSON.parse(text) as { error?: unknown }
    return typeof parsed.error === "string" ? parsed.error : "Unknown"
  } catch {
    return "Unknown"
  }
}

/**
 * Sends one planned webhook until it gets a final answer. A fresh signature per attempt, like real
 * providers; 409 / 5xx / connection errors are retried with a short backoff.
 */
const sendOne = (baseUrl: string, secrets: Secrets, report: LoadReport, onDone?: (finished: number) => void) => (planned: Planned) => {
  const url = baseUrl + (planned.provider === "stripe" ? stripePath : acmePayPath)
  const body = encoder.encode(planned.body)
  const attempt = Effect.gen(function*() {
    report.requests++
    const headers = yield* sign(planned, secrets, body)
    const answer = yield* post(url, headers, body)
    if (answer.status === 409 || answer.status >= 500) return yield* new RetryableAnswer({ status: answer.status })
    return answer
  })
  return attempt.pipe(
    Effect.tapError(() => Effect.sync(() => report.retried++)),
    Effect.retry({ schedule: Schedule.exponential(Duration.millis(20)), times: 6 }),
    Effect.match({
      onFailure: () => {
        report.undelivered++
      },
      onSuccess: (answer) => {
        if (answer.status === 202) report.accepted++
        else if (answer.status === 200) report.duplicates++
        else {
          const reason = `${answer.status} ${errorTag(answer.text)}`
          report.rejected.set(reason, (report.rejected.get(reason) ?? 0) + 1)
        }
      }
    }),
    Effect.ensuring(Effect.sync(() => {
      report.finished++
      onDone?.(report.finished)
    }))
  )
}

/** Sends the plan's webhooks to the ingress at `baseUrl`, `concurrency` at a time; fills `report`. */
export const send = (
  baseUrl: string,
  secrets: Secrets,
  load: Plan,
  concurrency: number,
  report: LoadReport,
  onDone?: (finished: number) => void
) => Effect.forEach(load.webhooks, sendOne(baseUrl, secrets, report, onDone), { concurrency, discard: true })
