/**
 * The egress sender: delivers a webhook to an endpoint signed with Standard Webhooks, retrying on a
 * schedule until a 2xx answer.
 *
 * - Only 2xx is success; redirects are never followed (a 3xx is a failure); 410 disables the endpoint.
 * - `Retry-After` (seconds or an HTTP date, on any status, typically 429/503) postpones the next attempt
 *   to at least that long; the schedule's own delay applies otherwise.
 * - Each attempt has a timeout (15 s default) and is signed afresh (new `webhook-timestamp`, same id).
 * - A per-endpoint breaker stops hammering a dead endpoint: while open, attempts are recorded as
 *   `breaker-open` without a request.
 * - An optional shared rate limit (`rateLimit`, an `@bulwark/resilience` limiter over Redis or SQL) paces
 *   requests across every sender and dispatcher process: an attempt waits for its endpoint's permit, and one
 *   that gets none within the limiter's wait bound is recorded as `rate-limited` without a request, and is made
 *   again once a permit is free: only requests count toward the schedule.
 * - The SSRF guard refuses internal destinations unless allow-listed.
 * - Every attempt is recorded (time, status, latency, a bounded response excerpt) and can be queried;
 *   exhaustion fails with {@link DeliveryExhausted} carrying that history, ready for a dead-letter queue.
 * Time comes from Effect `Clock`, so `TestClock` and the simulator drive the schedule.
 */
import { Failure, Observe } from "@bulwark/core"
import { Context, Duration, Effect, Layer, Schema } from "effect"
import type * as RateLimiter from "@bulwark/resilience/RateLimiter"
import * as Breaker from "./Breaker.js"
import * as HttpEgress from "./HttpEgress.js"
import * as internalAttempt from "./internal/attempt.js"
import * as Ssrf from "./Ssrf.js"
import { MalformedHeader, UnknownKey } from "./WebhookError.js"

/** A destination and the secrets it verifies with (`whsec_…` or `whsk_…`; several during a rotation). */
export interface Endpoint {
  readonly id: string
  readonly url: string
  readonly secrets: ReadonlyArray<string>
}

/** A webhook to deliver. `id` becomes `webhook-id` and stays the same on every attempt. */
export interface Message {
  readonly id: string
  readonly body: Uint8Array
  /** Default `application/json`. */
  readonly contentType?: string
  /** Extra request headers. */
  readonly headers?: Readonly<Record<string, string>>
}

/** How an attempt ended. */
export const Outcome = Schema.Literal(
  "delivered",
  "failed",
  "timeout",
  "network-error",
  "refused",
  "breaker-open",
  "rate-limited",
  "gone"
)
/** How an attempt ended. */
export type Outcome = typeof Outcome.Type

/** One recorded attempt. */
export class Attempt extends Schema.Class<Attempt>("@bulwark/webhook/Sender/Attempt")({
  endpointId: Schema.String,
  messageId: Schema.String,
  /** 1-based. */
  attempt: Schema.Number,
  /** When it started, epoch milliseconds (from `Clock`). */
  at: Schema.Number,
  outcome: Outcome,
  status: Schema.optional(Schema.Number),
  latencyMillis: Schema.Number,
  /** The first bytes of the response body, or the error. */
  excerpt: Schema.String,
  /** The `Retry-After` delay the endpoint asked for, milliseconds. */
  retryAfterMillis: Schema.optional(Schema.Number)
}) {}

/** Every attempt failed; the history says why. Permanent: route it to the dead-letter queue. */
export class DeliveryExhausted extends Schema.TaggedError<DeliveryExhausted>()("DeliveryExhausted", {
  endpointId: Schema.String,
  messageId: Schema.String,
  attempts: Schema.Array(Attempt)
}) {
  override get message(): string {
    const last = this.attempts[this.attempts.length - 1]
    return `delivery of ${this.messageId} to ${this.endpointId} failed after ${this.attempts.length} attempt(s)` +
      (last ? ` (last: ${last.outcome}${last.status === undefined ? "" : ` ${last.status}`})` : "")
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("permanent", "dependency")
  }
}

/** The endpoint is disabled (it answered 410 Gone); nothing is sent to it until it is enabled again. */
export class EndpointDisabled extends Schema.TaggedError<EndpointDisabled>()("EndpointDisabled", {
  endpointId: Schema.String,
  messageId: Schema.String,
  attempts: Schema.Array(Attempt)
}) {
  override get message(): string {
    return `endpoint ${this.endpointId} is disabled; ${this.messageId} was not delivered`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("permanent", "dependency")
  }
}

/** A refused destination, from the SSRF guard. */
export const DestinationRefused = Ssrf.DestinationRefused
/** A refused destination, from the SSRF guard. */
export type DestinationRefused = Ssrf.DestinationRefused

/** Why a send failed. */
export type SendError = DeliveryExhausted | EndpointDisabled | Ssrf.DestinationRefused | UnknownKey | MalformedHeader

/** A successful delivery and the attempts it took. */
export interface Delivered {
  readonly endpointId: string
  readonly messageId: string
  readonly attempts: ReadonlyArray<Attempt>
}

/** The default schedule: delays before each attempt (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h). */
export const defaultSchedule: ReadonlyArray<Duration.Duration> = [
  Duration.zero,
  Duration.seconds(5),
  Duration.minutes(5),
  Duration.minutes(30),
  Duration.hours(2),
  Duration.hours(5),
  Duration.hours(10),
  Duration.hours(10)
]

/** Settings of the sender. */
export interface Options {
  /** The delay before each attempt; its length is the number of attempts. Default {@link defaultSchedule}. */
  readonly schedule?: ReadonlyArray<Duration.DurationInput>
  /** Per-attempt timeout. Default 15 s. */
  readonly attemptTimeout?: Duration.DurationInput
  /** Hosts, addresses or CIDR ranges allowed despite the SSRF guard (e.g. `["127.0.0.1"]` in tests). */
  readonly allow?: Ssrf.AllowList
  /** Bytes of response body kept per attempt. Default 1024. */
  readonly excerptBytes?: number
  /** The longest `Retry-After` honoured. Default 1 day. */
  readonly maxRetryAfter?: Duration.DurationInput
  /** The per-endpoint breaker. Default {@link Breaker.make} with its defaults. */
  readonly breaker?: Breaker.Breaker
  /** Messages whose history is kept for {@link Sender} `history`. Default 10 000 (oldest forgotten first). */
  readonly historyLimit?: number
  /** The `user-agent` header. Default `bulwark-webhook`. */
  readonly userAgent?: string
  /** A rate limit every attempt waits on, keyed per endpoint by default. Default: none. */
  readonly rateLimit?: RateLimit
}

/** A shared rate limit for outgoing requests. */
export interface RateLimit {
  readonly limiter: RateLimiter.RateLimiter
  /** The limiter key of an endpoint. Default its id (one limit per endpoint); a constant makes one global limit. */
  readonly key?: (endpoint: Endpoint) => string
}

/**
 * @internal the attempt context's pacing for a rate limit; `waitAtMostMillis` shortens (never lengthens) the
 * limiter's own wait bound.
 */
export const paceFor = (rateLimit: RateLimit | undefined) => {
  if (rateLimit === undefined) return undefined
  const key = rateLimit.key ?? ((endpoint: Endpoint) => endpoint.id)
  const own = Duration.toMillis(rateLimit.limiter.maxWait)
  return (endpoint: Endpoint, waitAtMostMillis?: number) =>
    waitAtMostMillis === undefined || waitAtMostMillis >= own
      ? rateLimit.limiter.acquire(key(endpoint))
      : rateLimit.limiter.acquire(key(endpoint), { maxWait: Duration.millis(Math.max(0, waitAtMostMillis)) })
}

/** The sender port. */
export class Sender extends Context.Tag("@bulwark/webhook/Sender")<Sender, {
  /** Delivers `message` to `endpoint`, retrying on the schedule. */
  readonly send: (endpoint: Endpoint, message: Message) => Effect.Effect<Delivered, SendError>
  /** Every recorded attempt for a message, oldest first (across endpoints). */
  readonly history: (messageId: string) => Effect.Effect<ReadonlyArray<Attempt>>
  /** Whether an endpoint has been disabled by a 410. */
  readonly isDisabled: (endpointId: string) => Effect.Effect<boolean>
  /** Re-enables a disabled endpoint. */
  readonly enable: (endpointId: string) => Effect.Effect<void>
}>() {}

/**
 * Parses `Retry-After` (delay-seconds or an HTTP date, RFC 9110 §10.2.3) relative to `now`, in milliseconds;
 * the same parser as the core failure classification, so garbage is no hint and a past date is 0.
 */
export const parseRetryAfter: (value: string | undefined, now: number) => number | undefined = Failure.parseRetryAfter

/**
 * Creates an in-process sender: `send` retries in the calling fiber, sleeping between attempts, and keeps the
 * history in memory. Call it where nothing else redelivers the message meanwhile (a request handler, a script).
 * Inside a queue consumer, a retry sleep longer than the queue's visibility timeout lets the queue hand the
 * message to a second consumer, which delivers it again: use the durable `Dispatcher` there. The HTTP egress is
 * the one in context ({@link HttpEgress.HttpEgress}), else Node's.
 */
export const make = (options: Options = {}): Effect.Effect<Context.Tag.Service<Sender>> =>
  Effect.map(HttpEgress.current, (egress) => {
    const schedule = (options.schedule ?? defaultSchedule).map((d) => Duration.toMillis(d))
    const attemptTimeout = Duration.decode(options.attemptTimeout ?? Duration.seconds(15))
    const excerptBytes = options.excerptBytes ?? 1024
    const maxRetryAfter = Duration.toMillis(options.maxRetryAfter ?? Duration.days(1))
    const breaker = options.breaker ?? Breaker.make()
    const historyLimit = options.historyLimit ?? 10_000
    const userAgent = options.userAgent ?? "bulwark-webhook"
    const context: internalAttempt.AttemptContext = {
      egress,
      guard: internalAttempt.guardFor(options.allow ?? [], egress),
      breaker,
      attemptTimeout,
      excerptBytes,
      maxRetryAfter,
      userAgent,
      pace: paceFor(options.rateLimit),
      makeAttempt: (fields) => record(new Attempt(fields))
    }
    const histories = new Map<string, Array<Attempt>>()
    const disabled = new Set<string>()

    const record = (attempt: Attempt) => {
      let list = histories.get(attempt.messageId)
      if (list === undefined) {
        list = []
        histories.set(attempt.messageId, list)
        if (histories.size > historyLimit) histories.delete(histories.keys().next().value!)
      }
      list.push(attempt)
      return attempt
    }

    const send = (endpoint: Endpoint, message: Message): Effect.Effect<Delivered, SendError> =>
      Effect.gen(function*() {
        const attempts: Array<Attempt> = []
        if (disabled.has(endpoint.id)) {
          return yield* new EndpointDisabled({ endpointId: endpoint.id, messageId: message.id, attempts })
        }
        let url: URL
        try {
          url = new URL(endpoint.url)
        } catch {
          return yield* new Ssrf.DestinationRefused({ url: endpoint.url, reason: "not a valid URL" })
        }
        let nextDelay = schedule[0] ?? 0
        for (let i = 0; i < schedule.length;) {
          if (nextDelay > 0) yield* Effect.sleep(Duration.millis(nextDelay))
          const attempt = yield* internalAttempt.attemptOnce(context, endpoint, url, message, attempts.length + 1)
          attempts.push(attempt)
          yield* Observe.emitWith("sender", "attempt", () => ({
            messageId: message.id,
            endpoint: endpoint.id,
            attempt: attempt.attempt,
            outcome: attempt.outcome,
            status: attempt.status,
            latencyMs: attempt.latencyMillis
          }))
          switch (attempt.outcome) {
            case "delivered":
              yield* Observe.emitWith("sender", "delivered", () => ({
                messageId: message.id,
                endpoint: endpoint.id,
                attempts: attempts.length
              }))
              return { endpointId: endpoint.id, messageId: message.id, attempts }
            case "gone":
              disabled.add(endpoint.id)
              yield* Observe.emitWith("sender", "disabled", () => ({ endpoint: endpoint.id, messageId: message.id }))
              return yield* new EndpointDisabled({ endpointId: endpoint.id, messageId: message.id, attempts })
            case "refused":
              return yield* new Ssrf.DestinationRefused({ url: endpoint.url, reason: attempt.excerpt })
            case "rate-limited":
              // Our own limit sent nothing: tried again once a permit is free, without using up a scheduled attempt.
              nextDelay = internalAttempt.afterRefusedPermit(attempt, schedule, i + 1)
              continue
          }
          i++
          nextDelay = Math.max(schedule[i] ?? 0, attempt.retryAfterMillis ?? 0)
        }
        yield* Observe.emitWith("sender", "exhausted", () => ({
          messageId: message.id,
          endpoint: endpoint.id,
          attempts: attempts.length
        }))
        return yield* new DeliveryExhausted({ endpointId: endpoint.id, messageId: message.id, attempts })
      })

    return {
      send,
      history: (messageId) => Effect.sync(() => [...(histories.get(messageId) ?? [])]),
      isDisabled: (endpointId) => Effect.sync(() => disabled.has(endpointId)),
      enable: (endpointId) => Effect.sync(() => void disabled.delete(endpointId))
    }
  })

/** Provides a {@link Sender}. */
export const layer = (options: Options = {}): Layer.Layer<Sender> => Layer.effect(Sender, make(options))
