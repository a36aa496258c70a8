/**
 * A polling source: for systems that only expose a GET endpoint. The poller reads a source page by page
 * through a {@link Source.FetchPage}, publishes each item as an envelope through the transactional outbox
 * and saves its cursor in the same transaction, so a crash at any step neither skips nor republishes a page.
 *
 * - One poller per source among many instances: a lease in the {@link CursorStore}, renewed in the
 *   background while polling; the cursor is saved only while the lease is held (fencing), so an instance
 *   that lost it cannot commit.
 * - The fetch runs through a circuit breaker and a retry policy (`@bulwark/retry`): transient failures are
 *   retried with backoff, `429`/`503` `Retry-After` is honoured, and an open breaker spares the source.
 * - Between polls it waits `interval` with jitter, or polls again at once when the page says more is waiting.
 * - Metrics: `bulwark_poll_pages_total`, `bulwark_poll_items_total`, `bulwark_poll_errors_total` (by
 *   category), `bulwark_poll_lag_ms` (now − the newest item's time); a `poll {source}` span per page.
 * - Audit: each published item is recorded as `polled` when an `AuditLog` is in context.
 */
import { AuditLog, Envelope, Failure, Observe, Supervise, Telemetry } from "@bulwark/core"
import { Breaker } from "@bulwark/circuit-breaker"
import { Outbox } from "@bulwark/outbox"
import { Backoff, Retry } from "@bulwark/retry"
import { Clock, DateTime, Deferred, Duration, Effect, Fiber, Metric, Option, Random, type Schema, type Scope } from "effect"
import { CursorStore, type CursorStoreError, LeaseLost } from "./CursorStore.js"
import type * as Source from "./Source.js"

/** Settings of a poller. */
export interface Options<A, I, RS, E, RF> {
  /** The source's name: the key of its cursor and lease, and the metrics' `source` tag. */
  readonly name: string
  /** Where the items are published (through the outbox). */
  readonly topic: string
  /** The envelopes' `type`. */
  readonly type: string
  /** The envelopes' `source`. Default `poll:<name>`. */
  readonly source?: string
  /** The payload schema, to encode the envelopes. */
  readonly schema: Schema.Schema<A, I, RS>
  /** Fetches one page; see the adapters in `Source`. */
  readonly fetch: Source.FetchPage<A, E, RF>
  /** Time between polls when the source has nothing more. Default 30 s. */
  readonly interval?: Duration.DurationInput
  /** Share of the interval added or removed at random, so instances do not poll in step. Default 0.2. */
  readonly jitter?: number
  /** How long the lease lasts without renewal (renewed every third of it). Default 30 s. */
  readonly lease?: Duration.DurationInput
  /** Retry policy of one fetch. Default: 5 attempts, 200 ms doubling to 30 s with full jitter, `Retry-After` honoured. */
  readonly retry?: Retry.Policy
  /** The breaker around the source. Default: one per source, opening at half of 10 calls failing, for 30 s. */
  readonly breaker?: Breaker.Breaker
  /** This instance's name in the lease. Default: random. */
  readonly instanceId?: string
}

/** Pages fetched and committed, by source. */
export const pagesTotal = Metric.counter("bulwark_poll_pages_total", { description: "Pages polled and committed", incremental: true })
/** Items published, by source. */
export const itemsTotal = Metric.counter("bulwark_poll_items_total", { description: "Items polled and published", incremental: true })
/** Failed polls (after retries), by source and category. */
export const errorsTotal = Metric.counter("bulwark_poll_errors_total", { description: "Polls that failed after retries", incremental: true })
/** Now − the newest item's time, by source (ms). */
export const lagGauge = Metric.gauge("bulwark_poll_lag_ms", { description: "Age of the newest item polled" })

/** What one step did. */
export interface StepResult {
  readonly items: number
  readonly more: boolean
  /** Whether the cursor moved. */
  readonly advanced: boolean
}

/** The default retry policy of a fetch. */
export const defaultRetry: Retry.Policy = Retry.policy({
  maxAttempts: 5,
  schedule: Backoff.exponential({ base: "200 millis", cap: "30 seconds", jitter: "full" })
})

/**
 * One poll: reads the cursor, fetches a page (breaker, retry), then in one transaction appends the items to
 * the outbox and saves the next cursor, while `holder` holds the lease ({@link LeaseLost} otherwise).
 */
export const step = <A, I, RS, E, RF>(
  options: Options<A, I, RS, E, RF>,
  holder: string,
  breaker: Breaker.Breaker,
  append: ReturnType<typeof Outbox.append<A, I, RS>>
) =>
  Effect.gen(function*() {
    const store = yield* CursorStore
    const cursor = yield* store.load(options.name)
    // Suspended: the retry runs this effect again, and a fetch may build its request eagerly.
    const page = yield* Effect.suspend(() => options.fetch(cursor)).pipe(
      breaker.execute,
      Retry.retry(options.retry ?? defaultRetry)
    )
    const source = options.source ?? `poll:${options.name}`
    const envelopes = yield* Effect.forEach(page.items, (item) =>
      Envelope.make({
        id: `${options.name}:${item.id}`,
        type: options.type,
        source,
        subject: item.subject,
        data: item.data,
        ...(item.time === undefined ? {} : { time: DateTime.unsafeMake(item.time) })
      }))
    const advanced = page.next !== undefined && page.next !== Option.getOrUndefined(cursor)
    if (envelopes.length > 0 || advanced) {
      yield* store.transaction(
        Effect.zipRight(
          append(options.topic, envelopes),
          store.save(options.name, holder, page.next ?? Option.getOrUndefined(cursor))
        )
      )
    }
    const tag = <T extends Metric.Metric<any, any, any>>(metric: T) => Metric.tagged(metric, "source", options.name) as T
    yield* Metric.increment(tag(pagesTotal))
    yield* Metric.incrementBy(tag(itemsTotal), envelopes.length)
    const newest = page.items.reduce((max, item) => item.time !== undefined && item.time > max ? item.time : max, -Infinity)
    if (Number.isFinite(newest)) {
      const now = yield* Clock.currentTimeMillis
      yield* Metric.set(tag(lagGauge), Math.max(0, now - newest))
    }
    yield* AuditLog.record(() =>
      envelopes.map((envelope) => ({
        eventId: envelope.id,
        stage: "polled" as const,
        component: "poll",
        topic: options.topic,
        outcome: "appended",
        detail: { source: options.name }
      }))
    )
    yield* Observe.emit("poll", "page", { source: options.name, items: envelopes.length, more: page.more, holder })
    return { items: envelopes.length, more: page.more, advanced } satisfies StepResult
  }).pipe(
    Telemetry.withSafeSpan(`poll ${options.name}`, {
      kind: "consumer",
      attributes: { "bulwark.poll.source": options.name, [Telemetry.Attr.destination]: options.topic }
    })
  )

const jittered = (millis: number, jitter: number) =>
  Effect.map(Random.next, (r) => Math.max(0, Math.round(millis * (1 + jitter * (2 * r - 1)))))

/**
 * Runs the poller until interrupted: waits for the source's lease, polls while holding it (renewing it in
 * the background), and gives it up when interrupted. Failures are counted, logged and retried after a
 * capped backoff; they never end the loop. A lost lease sends the instance back to waiting.
 */
export const run = <A, I, RS, E, RF>(
  options: Options<A, I, RS, E, RF>
): Effect.Effect<never, never, CursorStore | Outbox.Outbox | RS | RF | Scope.Scope> =>
  Effect.gen(function*() {
    const store = yield* CursorStore
    const holder = options.instanceId ?? `poller-${(yield* Random.nextInt).toString(36)}`
    const leaseMillis = Duration.toMillis(options.lease ?? "30 seconds")
    const intervalMillis = Duration.toMillis(options.interval ?? "30 seconds")
    const jitter = Math.min(1, Math.max(0, options.jitter ?? 0.2))
    const breaker = options.breaker ?? (yield* Breaker.make(`poll:${options.name}`, {
      window: { kind: "count", size: 10 },
      minimumCalls: 5,
      openDuration: Breaker.exponentialOpenDuration({ initial: "5 seconds", max: "2 minutes" })
    }).pipe(Effect.orDie))
    const append = Outbox.append(options.schema)
    const supervisor = yield* Supervise.make({ name: `poll:${options.name}`, backoffBase: "500 millis", backoffMax: "1 minute" })

    yield* Effect.addFinalizer(() =>
      Effect.zipRight(supervisor.release, store.release(options.name, holder).pipe(
        Effect.catchAll((error) => Effect.logWarning(`poller ${holder}: could not release the lease of ${options.name}`, error))
      ))
    )

    // The supervisor logs the change to degraded once and waits a jittered, capped backoff; a source's
    // Retry-After (or an open breaker's) is waited on top when it asks for longer.
    const failed = (error: unknown) =>
      Effect.gen(function*() {
        const verdict = yield* Failure.classify(error)
        yield* Metric.increment(Metric.tagged(Metric.tagged(errorsTotal, "source", options.name), "category", verdict.category))
        const started = yield* Clock.currentTimeMillis
        yield* supervisor.degraded(error)
        if (verdict.retryAfter !== undefined) {
          const waited = (yield* Clock.currentTimeMillis) - started
          const rest = Duration.toMillis(verdict.retryAfter) - waited
          if (rest > 0) yield* Effect.sleep(Duration.millis(rest))
        }
      })

    // Polls while the lease holds; ends when it is lost (a failed renewal or a fenced save).
    const lead = Effect.gen(function*() {
      const lost = yield* Deferred.make<void>()
      const heartbeat = yield* Effect.gen(function*() {
        while (true) {
          yield* Effect.sleep(Duration.millis(Math.max(1, Math.floor(leaseMillis / 3))))
          const held = yield* store.renew(options.name, holder, leaseMillis).pipe(
            // A store fault is not a loss: the save's fencing still guards the commit.
            Effect.catchAll((error) => Effect.as(Effect.logWarning(`poller ${holder}: lease renewal failed`, error), true))
          )
          if (!held) return yield* Deferred.succeed(lost, undefined)
        }
      }).pipe(Effect.forkScoped)
      const polling = Effect.gen(function*() {
        while (true) {
          const result = yield* Effect.either(step(options, holder, breaker, append))
          if (result._tag === "Left") {
            if (result.left instanceof LeaseLost) return
            yield* failed(result.left)
            continue
          }
          yield* supervisor.up
          if (!result.right.more) yield* Effect.sleep(Duration.millis(yield* jittered(intervalMillis, jitter)))
        }
      })
      yield* Effect.raceFirst(polling, Deferred.await(lost))
      yield* Fiber.interrupt(heartbeat)
      yield* Effect.logInfo(`poller ${holder}: lost the lease of ${options.name}`)
    })

    while (true) {
      const acquired = yield* store.acquire(options.name, holder, leaseMillis).pipe(
        Effect.catchAll((error: CursorStoreError) => Effect.as(failed(error), false))
      )
      if (acquired) {
        yield* Observe.emit("poll", "leading", { source: options.name, holder })
        yield* Effect.scoped(lead)
      } else {
        yield* Effect.sleep(Duration.millis(yield* jittered(Math.max(1, leaseMillis / 2), 0.3)))
      }
    }
  })
