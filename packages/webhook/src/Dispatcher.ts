/**
 * The durable webhook sender (Svix's delivery model). `send` stores the message and one delivery per endpoint
 * (in the caller's transaction, on SQL); workers in any number of processes claim due deliveries under a
 * lease with a fencing token, make one attempt each, and record it with the next due time. No retry sleeps
 * in a fiber: a restart loses nothing, a queue's redelivery of the triggering message cannot deliver twice,
 * and attempts are queryable after the fact.
 *
 * - Only 2xx is success; 410 disables the endpoint; `Retry-After` postpones the next attempt.
 * - The schedule is Svix's (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); after its last attempt
 *   a delivery fails as `exhausted` (event `message.attempt.exhausted`).
 * - An endpoint that has failed without a success for `disableAfter` (5 days) is disabled
 *   (`endpoint.disabled`); a success after failures emits `message.attempt.recovered`.
 * - `resend` and `recover` (failed deliveries since a date) make deliveries pending again.
 *
 * Exactly one successful delivery per (message, endpoint): a delivery is attempted by one worker at a time
 * and never again once a success is recorded. The one window left is a worker that dies after the endpoint
 * answered 2xx and before the store recorded it: the delivery is attempted again with the same `webhook-id`,
 * which Standard Webhooks receivers use to drop the copy.
 */
import { Observe } from "@bulwark/core"
import { Clock, Context, Data, Duration, Effect, Layer, Option, Queue, Random, type Scope } from "effect"
import * as Breaker from "./Breaker.js"
import {
  type Claim,
  type DeliveryRecord,
  DispatchStore,
  type DispatchStoreError,
  type Filter
} from "./DispatchStore.js"
import * as HttpEgress from "./HttpEgress.js"
import * as internalAttempt from "./internal/attempt.js"
import * as internalDispatch from "./internal/dispatch.js"
import { Attempt, defaultSchedule, type Endpoint, type Message, type Options as SenderOptions, paceFor } from "./Sender.js"

/** Settings of the dispatcher. */
export interface Options extends Omit<SenderOptions, "historyLimit"> {
  /** Attempts one worker runs at once. Default 10. */
  readonly concurrency?: number
  /** How long a claim is held; past it another worker may take the delivery. Default the attempt timeout + 15 s. */
  readonly lease?: Duration.DurationInput
  /** The longest an idle worker waits before looking for due deliveries again. Default 1 s. */
  readonly pollInterval?: Duration.DurationInput
  /** An endpoint failing without a success this long is disabled. Default 5 days. */
  readonly disableAfter?: Duration.DurationInput
  /** Identifies this worker in logs. Default random. */
  readonly workerId?: string
  /** Receives the operational events (also emitted through `Observe`, source `dispatcher`). */
  readonly onEvent?: (event: OperationalEvent) => Effect.Effect<void>
}

/** Operational events, named as Svix names them. */
export type OperationalEvent =
  | { readonly type: "endpoint.disabled"; readonly endpointId: string; readonly reason: string; readonly at: number }
  | { readonly type: "message.attempt.exhausted"; readonly endpointId: string; readonly messageId: string; readonly attempts: number }
  | { readonly type: "message.attempt.recovered"; readonly endpointId: string; readonly messageId: string; readonly attempts: number }

/** `send` named an endpoint that is not registered. */
export class UnknownEndpoint extends Data.TaggedError("UnknownEndpoint")<{ readonly endpointId: string }> {
  override get message(): string {
    return `no endpoint ${this.endpointId} is registered`
  }
}

/** The dispatcher port. */
export class Dispatcher extends Context.Tag("@bulwark/webhook/Dispatcher")<Dispatcher, {
  /** Adds or updates an endpoint (URL and secrets); a disabled one stays disabled. */
  readonly registerEndpoint: (endpoint: Endpoint) => Effect.Effect<void, DispatchStoreError>
  /**
   * Stores `message` for delivery to each endpoint; answers how many deliveries were new (the same message id
   * sent again to the same endpoint is ignored). Joins the caller's SQL transaction when there is one.
   */
  readonly send: (message: Message, endpointIds: ReadonlyArray<string>) => Effect.Effect<number, DispatchStoreError | UnknownEndpoint>
  /** Every recorded attempt of a message, oldest first. */
  readonly attempts: (messageId: string) => Effect.Effect<ReadonlyArray<Attempt>, DispatchStoreError>
  /** Deliveries matching `filter`. */
  readonly deliveries: (filter: Filter) => Effect.Effect<ReadonlyArray<DeliveryRecord>, DispatchStoreError>
  /** Sends a message again (to one endpoint, or all it went to), even if it was delivered; answers how many. */
  readonly resend: (messageId: string, endpointId?: string) => Effect.Effect<number, DispatchStoreError>
  /** Makes an endpoint's failed deliveries created since `since` (epoch ms) pending again; answers how many. */
  readonly recover: (endpointId: string, since: number) => Effect.Effect<number, DispatchStoreError>
  /** Re-enables an endpoint and clears its failure run. */
  readonly enable: (endpointId: string) => Effect.Effect<void, DispatchStoreError>
  /** Disables an endpoint: its pending deliveries fail as `disabled` when next due. */
  readonly disable: (endpointId: string, reason: string) => Effect.Effect<void, DispatchStoreError>
  /** Claims the due deliveries (up to the concurrency) and attempts them; answers how many it settled. */
  readonly runOnce: Effect.Effect<number, DispatchStoreError>
  /** One worker: loops until interrupted, attempting deliveries as they fall due. */
  readonly run: Effect.Effect<never, never, Scope.Scope>
}>() {}

/** Builds a dispatcher over the store in context; the HTTP egress is the one in context, else Node's. */
export const make = (options: Options = {}): Effect.Effect<Dispatcher["Type"], never, DispatchStore> =>
  Effect.gen(function*() {
    const store = yield* DispatchStore
    const egress = yield* HttpEgress.current
    const schedule = (options.schedule ?? defaultSchedule).map((d) => Duration.toMillis(d))
    const attemptTimeout = Duration.decode(options.attemptTimeout ?? Duration.seconds(15))
    const leaseMillis = Duration.toMillis(options.lease ?? Duration.sum(attemptTimeout, Duration.seconds(15)))
    const pollMillis = Math.max(1, Duration.toMillis(options.pollInterval ?? Duration.seconds(1)))
    const disableAfter = Duration.toMillis(options.disableAfter ?? Duration.days(5))
    const concurrency = Math.max(1, Math.floor(options.concurrency ?? 10))
    const workerId = options.workerId ?? `dispatcher-${(yield* Random.nextInt).toString(36)}`
    const context: internalAttempt.AttemptContext = {
      egress,
      guard: internalAttempt.guardFor(options.allow ?? [], egress),
      breaker: options.breaker ?? Breaker.make(),
      attemptTimeout,
      excerptBytes: options.excerptBytes ?? 1024,
      maxRetryAfter: Duration.toMillis(options.maxRetryAfter ?? Duration.days(1)),
      userAgent: options.userAgent ?? "bulwark-webhook",
      pace: paceFor(options.rateLimit),
      makeAttempt: (fields) => new Attempt(fields)
    }
    // Local wake-ups: a `send` in this process, or a finished attempt freeing a slot.
    const wake = yield* Queue.sliding<void>(1)
    const announce = (event: OperationalEvent) =>
      Observe.emitWith("dispatcher", event.type, () => {
        const { type: _, ...attributes } = event
        return attributes
      }).pipe(Effect.zipRight(options.onEvent === undefined ? Effect.void : options.onEvent(event)))

    const deliverContext = { announce, disableAfter, schedule, store, workerId, leaseMillis }
    const attemptClaim = (claim: Claim, claimedAt: number) => internalDispatch.deliver(context, deliverContext, claim, claimedAt)

    const runOnce = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const claims = yield* store.claim({ workerId, now, limit: concurrency, leaseMillis })
      const settled = yield* Effect.forEach(claims, (claim) => attemptClaim(claim, now), { concurrency: "unbounded" })
      return settled.filter((ok) => ok).length
    })

    const run: Effect.Effect<never, never, Scope.Scope> = internalDispatch.workerLoop({
      store,
      workerId,
      concurrency,
      leaseMillis,
      pollMillis,
      drainMillis: Duration.toMillis(attemptTimeout) + 1_000,
      wake,
      attempt: attemptClaim
    })

    const registerEndpoint = (endpoint: Endpoint) => store.putEndpoint(endpoint)
    const send = (message: Message, endpointIds: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        for (const id of endpointIds) {
          if (Option.isNone(yield* store.endpoint(id))) return yield* new UnknownEndpoint({ endpointId: id })
        }
        const createdAt = yield* Clock.currentTimeMillis
        const added = yield* store.enqueue({ ...message, createdAt }, endpointIds)
        yield* Queue.offer(wake, undefined)
        return added
      })
    const requeue = (filter: Parameters<typeof store.requeue>[0]) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => store.requeue(filter, now)).pipe(
        Effect.tap((n) => n > 0 ? Queue.offer(wake, undefined) : Effect.void)
      )
    return {
      registerEndpoint,
      send,
      attempts: store.attempts,
      deliveries: store.deliveries,
      resend: (messageId, endpointId) =>
        requeue({ messageId, ...(endpointId === undefined ? {} : { endpointId }), includeDelivered: true }),
      recover: (endpointId, since) => requeue({ endpointId, since, state: "failed" }),
      enable: (endpointId) => store.updateEndpoint(endpointId, { disabled: false, disabledReason: null, failingSince: null }),
      disable: (endpointId, reason) => store.updateEndpoint(endpointId, { disabled: true, disabledReason: reason }),
      runOnce,
      run
    }
  })

/** Provides a {@link Dispatcher} and runs `workers` worker loops (default 1; 0 for a process that only sends). */
export const layer = (options: Options & { readonly workers?: number } = {}): Layer.Layer<Dispatcher, never, DispatchStore> =>
  Layer.scoped(
    Dispatcher,
    Effect.gen(function*() {
      const dispatcher = yield* make(options)
      const workers = Math.max(0, Math.floor(options.workers ?? 1))
      for (let i = 0; i < workers; i++) yield* Effect.forkScoped(dispatcher.run)
      return dispatcher
    })
  )
