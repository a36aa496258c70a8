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

/**
 * One webhook to send. It keeps numbers only and derives its event id and body when asked, so a plan of
 * 100 000 webhooks costs a few megabytes of heap rather than tens (the soak runs under a 256 MB cap).
 */
export class Planned {
  constructor(
    readonly kind: Kind,
    readonly provider: "acmepay" | "stripe",
    /** The provider's event number (the id is derived from it). */
    readonly event: number,
    /** The index of the payment, which names the payment and its order. */
    readonly payment: number,
    readonly customer: number,
    readonly amount: number
  ) {}

  /** The provider's event id (`webhook-id`, or the Stripe event's `id`). */
  get eventId(): string {
    return `${this.provider === "stripe" ? "evt" : "msg"}_${pad(this.event)}`
  }

  /** The order this webhook pays. */
  get orderId(): string {
    return `ord_${pad(this.payment)}`
  }

  /** The JSON body as the provider sends it; a malformed one is signed correctly, only the schema refuses it. */
  get body(): string {
    const paymentId = `${this.provider === "stripe" ? "pi" : "pay"}_${pad(this.payment)}`
    const customerId = `cus_${pad(this.customer)}`
    const amount = this.kind === "malformed" ? -this.amount : this.amount
    return this.provider === "stripe"
      ? stripeBody(this.eventId, paymentId, this.orderId, customerId, amount)
      : acmeBody(paymentId, this.orderId, customerId, amount)
  }

  /** The same webhook as another kind (an exact re-delivery). */
  as(kind: Kind): Planned {
    return new Planned(kind, this.provider, this.event, this.payment, this.customer, this.amount)
  }
}

/** The whole workload: the orders the shop holds before payments arrive, and the webhooks. */
export interface Plan {
  /** Built when asked (seeding reads it once). */
  readonly orders: ReadonlyArray<NewOrder>
  readonly webhooks: ReadonlyArray<Planned>
  /** Orders whose address the shipping API will reject. */
  readonly undeliverable: ReadonlySet<string>
  /** Distinct payments that should end up paying their order. */
  readonly payments: number
  /** The orders those payments pay (built when asked). */
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

/** Plans the workload (pure: the same options give the same plan). */
export const plan = (options: LoadOptions): Plan => {
  const random = mulberry32(options.seed)
  const customers = Math.max(1, Math.ceil(options.webhooks / 10))
  // Every webhook that is not a re-delivery references an order of its own: a forged or refused payment
  // leaves it pending.
  const ordered: Array<Planned> = []
  const undeliverable = new Set<string>()
  const webhooks: Array<Planned> = []
  const paid: Array<{ readonly index: number; readonly planned: Planned }> = []
  let events = 0
  let earlier = 0
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
      webhooks.push(paid[Math.floor(random() * earlier)]!.planned.as(kind))
      continue
    }
    if (kind === "resend") {
      const original = paid[Math.floor(random() * earlier)]!.planned
      webhooks.push(new Planned(kind, original.provider, ++events, original.payment, original.customer, original.amount))
      continue
    }
    const customer = Math.floor(random() * customers)
    const amount = 500 + Math.floor(random() * 20_000)
    const planned = new Planned(kind, provider, ++events, i, customer, amount)
    webhooks.push(planned)
    ordered.push(planned)
    if (kind === "payment") {
      paid.push({ index: i, planned })
      if (random() < options.undeliverableRate) undeliverable.add(planned.orderId)
    }
  }
  const paidPlans = paid.map((p) => p.planned)
  return {
    get orders() {
      return ordered.map((p) => ({ orderId: p.orderId, customerId: `cus_${pad(p.customer)}`, amount: p.amount, currency: "EUR" }))
    },
    webhooks,
    undeliverable,
    payments: paidPlans.length,
    get paidOrders() {
      return paidPlans.map((p) => p.orderId)
    }
  }
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

/**
 * Sends the plan's webhooks to the ingress at `baseUrl`, `concurrency` at a time; fills `report`. The senders
 * take the next webhook from a shared cursor: `Effect.forEach` with a concurrency keeps every element's
 * exit until the end, which is a few hundred bytes per webhook of a long run.
 */
export const send = (
  baseUrl: string,
  secrets: Secrets,
  load: Plan,
  concurrency: number,
  report: LoadReport,
  onDone?: (finished: number) => void
) =>
  Effect.suspend(() => {
    const one = sendOne(baseUrl, secrets, report, onDone)
    let next = 0
    const sender: Effect.Effect<void> = Effect.suspend(() =>
      next < load.webhooks.length ? Effect.zipRight(one(load.webhooks[next++]!), sender) : Effect.void
    )
    return Effect.all(Array.from({ length: Math.max(1, concurrency) }, () => sender), { concurrency: "unbounded", discard: true })
  })
