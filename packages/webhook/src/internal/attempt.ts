// One delivery attempt, shared by the in-process `Sender` and the durable `Dispatcher`: the SSRF guard, the
// per-endpoint breaker, a fresh Standard Webhooks signature, one POST through the egress, and the record.
import { Failure, Telemetry, TraceContext } from "@bulwark/core"
import { Clock, Duration, Effect } from "effect"
import type * as Breaker from "../Breaker.js"
import type * as HttpEgress from "../HttpEgress.js"
import type { Attempt, Endpoint, Message } from "../Sender.js"
import * as Signing from "../Signing.js"
import * as Ssrf from "../Ssrf.js"
import type { MalformedHeader, UnknownKey } from "../WebhookError.js"

/** What an attempt needs, fixed per sender. */
export interface AttemptContext {
  readonly egress: HttpEgress.HttpEgress["Type"]
  readonly guard: Ssrf.Guard
  readonly breaker: Breaker.Breaker
  readonly attemptTimeout: Duration.Duration
  readonly excerptBytes: number
  readonly maxRetryAfter: number
  readonly userAgent: string
  /**
   * Waits for the endpoint's permit of the shared rate limit, when one is set; its failure (no permit within
   * the limiter's wait bound, or the limiter's store down) means no request is sent.
   */
  readonly pace:
    | ((endpoint: Endpoint, waitAtMostMillis?: number) => Effect.Effect<void, { readonly message: string; readonly retryAfter?: Duration.Duration }>)
    | undefined
  /** Builds the attempt record (the `Attempt` class lives in Sender.ts, which imports this module). */
  readonly makeAttempt: (fields: ConstructorParameters<typeof Attempt>[0]) => Attempt
}

/** The egress's resolver, as the guard wants it. */
export const guardFor = (allow: Ssrf.AllowList, egress: HttpEgress.HttpEgress["Type"]): Ssrf.Guard =>
  Ssrf.make(allow, (host) =>
    egress.lookup(host).pipe(Effect.mapError((e) => new Ssrf.ResolveFailed({ host, detail: e.message }))))

type AttemptTarget = [context: AttemptContext, endpoint: Endpoint, url: URL, message: Message, n: number]
type AttemptError = UnknownKey | MalformedHeader

/**
 * The wait before trying again after an attempt refused a permit by our own rate limit: until the limiter says
 * one is free, or else the schedule's delay before attempt `next` (its last delay past its end). No scheduled
 * attempt is used up by it.
 */
export const afterRefusedPermit = (attempt: Attempt, schedule: ReadonlyArray<number>, next: number): number =>
  attempt.retryAfterMillis ?? schedule[Math.min(next, schedule.length - 1)] ?? 1_000

/**
 * Runs attempt number `n` of `message` to `endpoint` and answers its record. With `sendBy` (epoch ms), the
 * request goes out only if the clock has not passed it once the address is resolved and the rate limit's
 * permit is in hand; otherwise nothing is sent and the answer is undefined.
 */
export function attemptOnce(...target: AttemptTarget): Effect.Effect<Attempt, AttemptError>
export function attemptOnce(...target: [...AttemptTarget, sendBy: number]): Effect.Effect<Attempt | undefined, AttemptError>
export function attemptOnce(
  ...[context, endpoint, url, message, n, sendBy]: [...AttemptTarget, sendBy?: number]
): Effect.Effect<Attempt | undefined, AttemptError> {
  return Effect.gen(function*() {
    const { breaker, guard } = context
    const at = yield* Clock.currentTimeMillis
    const base = { endpointId: endpoint.id, messageId: message.id, attempt: n, at }
    const finish = (fields: Omit<ConstructorParameters<typeof Attempt>[0], keyof typeof base | "latencyMillis">) =>
      Effect.map(Clock.currentTimeMillis, (end) => context.makeAttempt({ ...base, ...fields, latencyMillis: end - at }))
    const resolved = yield* Effect.either(guard.resolve(url))
    if (resolved._tag === "Left" && resolved.left._tag === "DestinationRefused") {
      // A refusal says nothing about the endpoint's health, so it never reaches the breaker.
      return yield* finish({ outcome: "refused", excerpt: resolved.left.message })
    }
    // The permit is taken before the breaker is asked: a half-open breaker's one trial must not wait behind the
    // limiter (or be lost to its refusal). An open breaker costs a permit per scheduled attempt, which is rare.
    if (context.pace !== undefined) {
      // A durable worker's claim bounds the wait: a permit granted after `sendBy` could not be used.
      const paced = yield* Effect.either(
        sendBy === undefined ? context.pace(endpoint) : context.pace(endpoint, sendBy - (yield* Clock.currentTimeMillis))
      )
      if (paced._tag === "Left") {
        const retryAfter = paced.left.retryAfter
        return yield* finish({
          outcome: "rate-limited",
          excerpt: `${paced.left.message}; no request sent`,
          ...(retryAfter === undefined ? {} : { retryAfterMillis: Math.min(Duration.toMillis(retryAfter), context.maxRetryAfter) })
        })
      }
    }
    // A durable worker's claim may have run short while the address was resolved or the permit awaited (a slow
    // resolver, a rate limit's wait, a paused process): past `sendBy` another worker may already hold the
    // delivery, and a request sent now would be a second delivery. Checked before the breaker is asked, so a
    // half-open trial it admits is always made.
    if (sendBy !== undefined && (yield* Clock.currentTimeMillis) > sendBy) return undefined
    if (!(yield* breaker.allow(endpoint.id))) {
      return yield* finish({ outcome: "breaker-open", excerpt: "circuit breaker open; no request sent" })
    }
    if (resolved._tag === "Left") {
      yield* breaker.report(endpoint.id, false)
      return yield* finish({ outcome: "network-error", excerpt: resolved.left.message })
    }
    const signed = yield* Signing.standard(endpoint.secrets, { id: message.id, body: message.body })
    // One client span per request; its W3C context goes out with the request, so the receiver can join the trace.
    const response = yield* Effect.gen(function*() {
      const headers: Record<string, string> = {
        "content-type": message.contentType ?? "application/json",
        "user-agent": context.userAgent,
        ...message.headers,
        ...(yield* TraceContext.currentHeaders),
        ...signed
      }
      const answer = yield* context.egress.post({
        url,
        headers,
        body: message.body,
        address: resolved.right,
        excerptBytes: context.excerptBytes
      }).pipe(
        Effect.timeoutFail({ duration: context.attemptTimeout, onTimeout: () => "timeout" as const }),
        Effect.either
      )
      if (answer._tag === "Right") yield* Telemetry.annotate({ [Telemetry.Attr.httpStatus]: answer.right.status })
      return answer
    }).pipe(Telemetry.httpClientSpan({ method: "POST", serverAddress: url.hostname, attempt: n }))
    if (response._tag === "Left") {
      yield* breaker.report(endpoint.id, false)
      return response.left === "timeout"
        ? yield* finish({ outcome: "timeout", excerpt: `no answer within ${Duration.format(context.attemptTimeout)}` })
        : yield* finish({ outcome: "network-error", excerpt: response.left.message })
    }
    const { excerpt, status } = response.right
    const retryHeader = response.right.headers["retry-after"]
    const retryAfter = parseRetryAfterHeader(retryHeader, yield* Clock.currentTimeMillis)
    const ok = status >= 200 && status < 300
    // Throttling (429) says the endpoint is alive: it must not trip the breaker.
    if (status !== 429) yield* breaker.report(endpoint.id, ok)
    return yield* finish({
      outcome: ok ? "delivered" : status === 410 ? "gone" : "failed",
      status,
      excerpt,
      ...(retryAfter === undefined ? {} : { retryAfterMillis: Math.min(retryAfter, context.maxRetryAfter) })
    })
  })
}

/** `Retry-After` as milliseconds from `now` (the first value if repeated), or undefined. */
const parseRetryAfterHeader = (value: string | ReadonlyArray<string> | undefined, now: number) =>
  Failure.parseRetryAfter(typeof value === "string" ? value : value?.[0], now)
