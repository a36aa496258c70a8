// The dispatcher's two halves as top-level functions: `deliver` makes one attempt of a claimed delivery and
// settles it under its fencing token; `workerLoop` claims due deliveries as slots free up and sleeps until the
// next one is due (or a local wake-up), backing off while the store is unreachable (`Supervise`: health
// `webhook-dispatcher:<worker id>`, logged once per state change).
import { AuditLog, Supervise } from "@bulwark/core"
import { Clock, Duration, Effect, Fiber, Option, type Queue, type Scope } from "effect"
import type { Claim, Service as Store, Settlement } from "../DispatchStore.js"
import type { OperationalEvent } from "../Dispatcher.js"
import type { Attempt } from "../Sender.js"
import { afterRefusedPermit, type AttemptContext, attemptOnce } from "./attempt.js"

/** What `deliver` needs besides the attempt context. */
export interface DeliverContext {
  readonly store: Store
  readonly schedule: ReadonlyArray<number>
  readonly disableAfter: number
  readonly workerId: string
  /** How long a claim is held, counted from the time the claim was asked for. */
  readonly leaseMillis: number
  readonly announce: (event: OperationalEvent) => Effect.Effect<void>
}

/** Outcomes that say the endpoint is unhealthy (a 429 says it is alive, only busy). */
const isFailure = (attempt: Attempt) =>
  attempt.outcome === "timeout" || attempt.outcome === "network-error" || attempt.outcome === "breaker-open" ||
  (attempt.outcome === "failed" && attempt.status !== 429)

/** What to do after `attempt`, the `n`th of its delivery. */
const settlementOf = (attempt: Attempt, n: number, schedule: ReadonlyArray<number>, now: number): Settlement => {
  switch (attempt.outcome) {
    case "delivered":
      return { _tag: "Delivered" }
    case "gone":
      return { _tag: "Failed", reason: "gone" }
    case "refused":
      return { _tag: "Failed", reason: "refused" }
    case "rate-limited":
      // Not recorded as an attempt (see `deliver`); here only for a complete switch.
      return { _tag: "Retry", dueAt: now + afterRefusedPermit(attempt, schedule, n) }
  }
  if (n >= schedule.length) return { _tag: "Failed", reason: "exhausted" }
  return { _tag: "Retry", dueAt: now + Math.max(schedule[n] ?? 0, attempt.retryAfterMillis ?? 0) }
}

/**
 * Attempts one claimed delivery and settles it; answers whether this worker still held it. `claimedAt` is when
 * the claim was asked for (its lease runs from then).
 */
export const deliver = (
  context: AttemptContext,
  deliverContext: DeliverContext,
  claim: Claim,
  claimedAt: number
): Effect.Effect<boolean> =>
  Effect.gen(function*() {
    const { store, workerId } = deliverContext
    const { delivery, endpoint, message, token } = claim
    const settle = (attempt: Attempt | undefined, settlement: Settlement) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => store.settle(token, delivery, attempt, settlement, now))
    if (endpoint.disabled) return yield* settle(undefined, { _tag: "Failed", reason: "disabled" })
    const n = delivery.attempts + 1
    const at = yield* Clock.currentTimeMillis
    const refused = (excerpt: string) =>
      context.makeAttempt({ endpointId: endpoint.id, messageId: message.id, attempt: n, at, outcome: "refused", latencyMillis: 0, excerpt })
    let url: URL | undefined
    try {
      url = new URL(endpoint.url)
    } catch {
      url = undefined
    }
    if (url === undefined) return yield* settle(refused(`${endpoint.url} is not a valid URL`), { _tag: "Failed", reason: "refused" })
    // A claim that reached this point late (a slow claim query, a starved event loop) may expire while its request
    // is in flight, and another worker would send the message again. Too little lease left for a whole attempt:
    // send nothing, and let the lease lapse so the delivery is claimed afresh.
    // (A lease configured shorter than an attempt asks only for half of it, so such a dispatcher still sends.)
    const needed = Math.min(Duration.toMillis(context.attemptTimeout) + leaseMargin, deliverContext.leaseMillis / 2)
    const leaseLeft = claimedAt + deliverContext.leaseMillis - at
    if (leaseLeft < needed) {
      yield* Effect.logWarning(
        `webhook dispatcher ${workerId}: the claim of ${message.id} → ${endpoint.id} has ${Math.max(0, leaseLeft)} ms of its lease left, less than an attempt may take; not sending it (it is claimed again once the lease lapses)`
      )
      return false
    }
    // Resolving the address and waiting for the rate limit's permit take time too (and a process can be paused):
    // the same whole attempt's worth of lease must be left when the request goes out, or the claim could run out
    // while the request is in flight and another worker send it again. So the request is not sent past that
    // point, and the permit is not waited for past it: a permit that would come later is refused (no attempt is
    // recorded or counted) and the delivery made again once one is free.
    const sendBy = claimedAt + deliverContext.leaseMillis - needed
    // Once the endpoint has answered, recording the answer is not interrupted (a stopping worker whose drain
    // deadline passed): an answered attempt left unrecorded is sent again after the lease, a duplicate.
    return yield* Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        const attempt = yield* restore(attemptOnce(context, endpoint, url, message, n, sendBy)).pipe(
          // An unusable secret is the endpoint's configuration, not its health: no request can be signed.
          Effect.catchAll((error) => Effect.succeed(refused(error.message)))
        )
        if (attempt === undefined) {
          yield* Effect.logWarning(
            `webhook dispatcher ${workerId}: the claim of ${message.id} → ${endpoint.id} ran short before its request could go out; not sending it (it is claimed again once the lease lapses)`
          )
          return false
        }
        if (attempt.outcome === "rate-limited") {
          // Our own limit refused a permit: nothing was sent, and nothing is said about the endpoint. No attempt is
          // recorded or counted (a backlog held back by the limit would write one per refusal, and only requests
          // count toward the schedule); the delivery is due again once a permit is free. The limiter's metrics
          // count the refusals.
          const now = yield* Clock.currentTimeMillis
          return yield* settle(undefined, { _tag: "Retry", dueAt: now + afterRefusedPermit(attempt, deliverContext.schedule, n) })
        }
        return yield* recordAttempt(deliverContext, claim, attempt, n, settle)
      })
    )
  }).pipe(
    // A store fault while settling leaves the claim to expire: another worker (or this one) retries the delivery.
    Effect.catchAll((e) => Effect.as(Effect.logWarning(`webhook dispatcher: settling ${claim.message.id} → ${claim.endpoint.id} failed`, e), false))
  )

// Room kept between an attempt's timeout and its lease's end: the answer still has to be recorded.
const leaseMargin = 2_000

/** Records an answered attempt under the claim's token, then the endpoint's health and the events. */
const recordAttempt = (
  deliverContext: DeliverContext,
  claim: Claim,
  attempt: Attempt,
  n: number,
  settle: (attempt: Attempt | undefined, settlement: Settlement) => Effect.Effect<boolean, unknown>
) =>
  Effect.gen(function*() {
    const { announce, schedule, workerId } = deliverContext
    const { endpoint, message } = claim
    const now = yield* Clock.currentTimeMillis
    const settlement = settlementOf(attempt, n, schedule, now)
    const held = yield* settle(attempt, settlement)
    if (!held) {
      yield* Effect.logWarning(
        `webhook dispatcher ${workerId}: lost the claim of ${message.id} → ${endpoint.id}; its attempt ${n} (${attempt.outcome}) is not recorded`
      )
      return false
    }
    yield* AuditLog.record(() => ({
      eventId: message.id,
      stage: "sent",
      at: attempt.at,
      component: "dispatcher",
      topic: endpoint.id,
      outcome: attempt.outcome,
      attempt: n,
      durationMs: attempt.latencyMillis,
      detail: { settlement: settlement._tag, ...(attempt.status === undefined ? {} : { status: attempt.status }) }
    }))
    yield* afterSettle(deliverContext, claim, attempt, settlement, now).pipe(
      Effect.catchAll((e) => Effect.logWarning(`webhook dispatcher ${workerId}: could not update endpoint ${endpoint.id}`, e)),
      Effect.zipRight(announceSettled(announce, claim, settlement, n))
    )
    return true
  })

/** The endpoint's failure run and disabling, after a settled attempt. */
const afterSettle = (deliverContext: DeliverContext, claim: Claim, attempt: Attempt, settlement: Settlement, now: number) =>
  Effect.gen(function*() {
    const { announce, disableAfter, store } = deliverContext
    const { endpoint } = claim
    if (attempt.outcome === "gone") {
      const reason = "the endpoint answered 410 Gone"
      yield* store.updateEndpoint(endpoint.id, { disabled: true, disabledReason: reason })
      yield* announce({ type: "endpoint.disabled", endpointId: endpoint.id, reason, at: now })
      return
    }
    if (settlement._tag === "Delivered") {
      if (endpoint.failingSince !== undefined) yield* store.updateEndpoint(endpoint.id, { failingSince: null })
      return
    }
    if (!isFailure(attempt)) return
    // The claim's snapshot of the endpoint may be stale; the store holds the run's start.
    const fresh = Option.getOrUndefined(yield* store.endpoint(endpoint.id))
    if (fresh === undefined || fresh.disabled) return
    if (fresh.failingSince === undefined) {
      yield* store.updateEndpoint(endpoint.id, { failingSince: attempt.at })
    } else if (now - fresh.failingSince >= disableAfter) {
      const reason = `failing without a success since ${new Date(fresh.failingSince).toISOString()}`
      yield* store.updateEndpoint(endpoint.id, { disabled: true, disabledReason: reason })
      yield* announce({ type: "endpoint.disabled", endpointId: endpoint.id, reason, at: now })
    }
  })

/** A success after failures, or a delivery out of attempts, is an operational event. */
const announceSettled = (announce: DeliverContext["announce"], claim: Claim, settlement: Settlement, n: number) => {
  const ids = { endpointId: claim.endpoint.id, messageId: claim.message.id, attempts: n }
  if (settlement._tag === "Delivered" && n > 1) return announce({ type: "message.attempt.recovered", ...ids })
  if (settlement._tag === "Failed" && settlement.reason === "exhausted") {
    return announce({ type: "message.attempt.exhausted", ...ids })
  }
  return Effect.void
}

/** What the worker loop needs. */
export interface WorkerContext {
  readonly store: Store
  readonly workerId: string
  readonly concurrency: number
  readonly leaseMillis: number
  readonly pollMillis: number
  /** How long a stopping worker waits for its attempts in flight. */
  readonly drainMillis: number
  readonly wake: Queue.Queue<void>
  /** Attempts one claim; `claimedAt` is when the claim was asked for. */
  readonly attempt: (claim: Claim, claimedAt: number) => Effect.Effect<boolean>
}

/** Claims due deliveries as slots free up; idle, it waits for the next due time, a wake-up or the poll interval. */
export const workerLoop = (worker: WorkerContext): Effect.Effect<never, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { attempt, concurrency, drainMillis, leaseMillis, pollMillis, store, wake, workerId } = worker
    let inFlight = 0
    const supervisor = yield* Supervise.make({ name: `webhook-dispatcher:${workerId}`, backoffMax: "30 seconds" })
    yield* Effect.addFinalizer(() => supervisor.release)
    const attempts = new Set<Fiber.RuntimeFiber<boolean>>()
    const done = Effect.suspend(() => {
      inFlight--
      return worker.wake.offer(undefined)
    })
    // A stopping worker claims nothing more and lets its attempts finish (up to the attempt timeout), so a
    // graceful restart leaves no answered attempt unrecorded; only a kill leaves that window.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const running = [...attempts]
        if (running.length === 0) return
        // Finalizers run uninterruptibly: an uninterruptible wait would outlast its timeout (the timeout awaits
        // the loser it interrupts), so the bound never fired and a hung attempt held the stop forever.
        yield* Effect.interruptible(Fiber.awaitAll(running)).pipe(Effect.timeout(Duration.millis(drainMillis)), Effect.ignore)
        yield* Fiber.interruptAll(running)
      })
    )
    while (true) {
      const free = concurrency - inFlight
      let claimed = 0
      if (free > 0) {
        const now = yield* Clock.currentTimeMillis
        const claims = yield* Effect.either(store.claim({ workerId, now, limit: free, leaseMillis }))
        if (claims._tag === "Left") {
          // Degraded (logged once), a jittered backoff, and again; `up` once a claim works.
          yield* supervisor.degraded(claims.left)
          continue
        }
        yield* supervisor.up
        claimed = claims.right.length
        for (const claim of claims.right) {
          inFlight++
          const fiber = yield* Effect.forkDaemon(Effect.ensuring(attempt(claim, now), done))
          attempts.add(fiber)
          fiber.addObserver(() => attempts.delete(fiber))
        }
        if (claimed === free) continue
      }
      // Full: wait for a slot. Idle: wait for a local send, the next due delivery, or the poll interval.
      let until = pollMillis
      if (inFlight < concurrency) {
        const now = yield* Clock.currentTimeMillis
        const next = yield* Effect.orElseSucceed(store.nextDue, () => Option.none<number>())
        if (Option.isSome(next)) until = Math.min(pollMillis, Math.max(1, next.value - now))
      }
      yield* wake.take.pipe(Effect.timeout(Duration.millis(until)), Effect.ignore)
    }
  })
