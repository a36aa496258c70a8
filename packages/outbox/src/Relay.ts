/**
 * The outbox relay: claims pending rows, publishes them through any `Transport.Publisher`, marks them
 * published. Run one per process, as many processes as you like. It runs over any `OutboxStore` driver
 * (SQL or memory); what follows describes the SQL driver's statements, which the memory driver mirrors.
 *
 * - **Claim**: one `UPDATE … WHERE ctid = ANY(ARRAY(SELECT … FOR UPDATE SKIP LOCKED))` sets `claimed_by` and a
 *   lease (`claimed_until`). Concurrent relays skip each other's rows; a crashed relay's rows are claimable again
 *   once its lease expires, so they are published at least once (possibly twice: publish is not atomic
 *   with the mark).
 * - **Heartbeat**: leases are short (4 s by default) so a killed relay's keys resume within seconds; while a
 *   batch is being published a heartbeat renews the lease of its unsettled rows every `heartbeat`. A relay
 *   starts a publish only while its lease has at least one heartbeat left by its own clock (counted from
 *   before the claim or renewal was sent), and never for a row whose renewal found it taken over, so a live
 *   relay whose heartbeats fail stops publishing before another relay may take its rows.
 * - **Order per key**: only the oldest pending row of a key is claimable, so a key's next row is not
 *   published before the previous one is confirmed (or dead). Rows with key `""` are not ordered.
 * - **Partitioned stores** (`Outbox.make({ partitioned: true })`): a relay leases whole partitions of keys
 *   instead of rows, and its claim may hold several rows of a key, oldest first. It publishes them in waves
 *   (one row of a key per wave, each wave after the previous one settled) and stops a key for the round at
 *   its first retried or abandoned row; the heartbeat renews the partitions' leases. See `OutboxStore/Sql.ts`.
 * - **Failures**: a failed batch is retried row by row to isolate the culprit; a failing row waits
 *   `backoff` (exponential) and is retried up to `maxAttempts` times (a permanent failure is not retried);
 *   then it is dead: `state = 'dead'` with the error as a `Failure.FailureRecord` in `last_error`, and a copy
 *   with `Delivery.deadLetterHeaders` is published to `Delivery.deadLetterTopic(topic)`.
 * - **Wake-up**: a relay that finds nothing registers as asleep (a row in the outbox's sleepers table), claims
 *   once more, and waits for a notification or `pollInterval`. `append` NOTIFYs in its transaction while any
 *   relay is registered; after two rounds in a row that found rows the relay deregisters, so under load
 *   appends send no notifications (Postgres serialises notifying commits). A row whose transaction was still
 *   open when its relay registered is found by the next notification or poll.
 * - **Batching**: a round that found rows but fewer than `batchSize` waits `linger` before the next claim, so
 *   rows arriving meanwhile travel together: fewer statements per row under load, at most `linger` later.
 * - **Durability**: appends commit durably in the caller's transaction; the relay's claim and mark statements
 *   commit with `synchronous_commit = off`, so a database crash can only cause a republish, never a loss.
 * - **Retention**: a published row is deleted by the statement that settles it, unless `retention` is set:
 *   then it is kept as `published` and deleted every `cleanupInterval` once older than `retention`.
 * - **Faults**: `run` is supervised (`Supervise` from `@bulwark/core`): a failing round (database or broker
 *   down) makes the relay `degraded` and it retries with a jittered, capped backoff until it is back; side
 *   tasks (heartbeat, cleanup, gauges) log once when they start failing and once when they work again. A
 *   defect ends `run` loudly (logged at `Fatal`, `failed` in `Supervise.health`), never silently.
 * - **Ending the application on a fatal fault**: `layer` runs the relay in the background, where a fatal fault
 *   can only be logged. `layerMonitored` runs it the same way and provides `RelayMonitor`, whose `awaitFatal`
 *   fails with `RelayFailed` when the relay gives up: `Relay.guard(main)` (or racing `Relay.awaitFatal`) makes
 *   that failure end the program, so an orchestrator restarts it instead of leaving a process whose outbox is
 *   frozen.
 */
import { Delivery, Failure, Supervise } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { Cause, Clock, Context, Data, Deferred, Duration, Effect, Either, Exit, Layer, Metric, Queue, Random, type Scope } from "effect"
import { backlogGauge, lagGauge } from "./Outbox.js"
import { type ClaimedRow, OutboxStore, type OutboxStoreError } from "./OutboxStore.js"

/** Settings of a relay; every field has a default. */
export interface Options {
  /** Rows claimed per round. Default 200. */
  readonly batchSize?: number
  /**
   * How long a claim holds before another relay may take the rows; the heartbeat keeps renewing it while a
   * batch is being published. Default 4 s: how long a killed relay's keys wait.
   */
  readonly lease?: Duration.DurationInput
  /** How often the lease of rows being published is renewed. Default a quarter of `lease`; at most half of it. */
  readonly heartbeat?: Duration.DurationInput
  /** Longest wait between two claims without a notification. Default 1 s; an idle relay polls at least once a minute. */
  readonly pollInterval?: Duration.DurationInput
  /** Pause after a round that found fewer than `batchSize` rows, to gather the next batch. Default 10 ms; 0 turns it off. */
  readonly linger?: Duration.DurationInput
  /** Publish attempts before a row is dead. Default 10. */
  readonly maxAttempts?: number
  /** Delay after the first failure; doubles per attempt. Default 500 ms. */
  readonly backoffBase?: Duration.DurationInput
  /** Longest delay between attempts. Default 5 minutes. */
  readonly backoffMax?: Duration.DurationInput
  /**
   * How long published rows are kept. Default: not kept, a published row is deleted when it is marked (one
   * write per row less, and no archive to sweep). When set, rows stay as `published` and `cleanupInterval`
   * deletes them once older than this.
   */
  readonly retention?: Duration.DurationInput
  /** How often published rows past retention (and stale sleeper entries) are deleted. Default 1 minute. */
  readonly cleanupInterval?: Duration.DurationInput
  /** How often the backlog and lag gauges are refreshed. Default 5 s. */
  readonly metricsInterval?: Duration.DurationInput
  /** This relay's name in `claimed_by`. Default a random id (from Effect's `Random`, so seeded runs repeat it). */
  readonly relayId?: string
}

/** Exponential backoff: `base * 2^(attempt-1)`, capped at `max`. */
export const backoffMillis = (base: number, max: number, attempt: number): number =>
  Math.min(max, base * 2 ** Math.max(0, attempt - 1))

const randomId = Effect.map(Random.nextIntBetween(0, 2 ** 31), (n) => `relay-${process.pid}-${n.toString(36)}`)

/** What one relay round did. */
export interface RoundResult {
  readonly claimed: number
  readonly published: number
  readonly retried: number
  readonly dead: number
  /** Rows left unpublished because the lease could not be confirmed (they return when it expires). */
  readonly abandoned: number
  /**
   * Rows left pending, unpublished, because an earlier row of their key in the same claim was retried or
   * abandoned (only a partitioned store's claim holds several rows of a key); a later claim returns them.
   */
  readonly deferred: number
}

/** A relay built by {@link make}. */
export interface Relay {
  readonly relayId: string
  /** Claims one batch and settles it; answers what happened. Its leases are renewed only while `run` runs (the heartbeat). */
  readonly round: Effect.Effect<RoundResult, OutboxStoreError>
  /** Deletes published rows past the retention (and the store's stale bookkeeping); answers how many rows. */
  readonly cleanup: Effect.Effect<number, OutboxStoreError>
  /** Loops until interrupted: claims, publishes, waits for a wake-up; also runs cleanup and the gauges. */
  readonly run: Effect.Effect<never, never, Scope.Scope>
}

/**
 * The relay's steps over the `OutboxStore` in context: `round` claims and settles one batch; `run` loops forever.
 */
export const make = (options: Options = {}): Effect.Effect<Relay, never, OutboxStore | Transport.Publisher> =>
  Effect.gen(function*() {
    const store = yield* OutboxStore
    const publisher = yield* Transport.Publisher
    const relayId = options.relayId ?? (yield* randomId)
    const batchSize = Math.max(1, Math.floor(options.batchSize ?? 200))
    const leaseMillis = Duration.toMillis(Duration.decode(options.lease ?? "4 seconds"))
    const heartbeatMillis = Math.min(
      leaseMillis / 2,
      options.heartbeat === undefined ? leaseMillis / 4 : Duration.toMillis(Duration.decode(options.heartbeat))
    )
    // An idle relay polls at least once a minute, which also refreshes its sleeper registration (SQL).
    const pollInterval = Duration.min(Duration.decode(options.pollInterval ?? "1 second"), Duration.minutes(1))
    const linger = Duration.decode(options.linger ?? "10 millis")
    const maxAttempts = Math.max(1, Math.floor(options.maxAttempts ?? 10))
    const backoffBase = Duration.toMillis(Duration.decode(options.backoffBase ?? "500 millis"))
    const backoffMax = Duration.toMillis(Duration.decode(options.backoffMax ?? "5 minutes"))
    // Without a retention nothing is kept, and cleanup deletes at once whatever an earlier version archived.
    const keep = options.retention !== undefined
    const retentionMillis = options.retention === undefined ? 0 : Duration.toMillis(Duration.decode(options.retention))
    const claimRequest = { relayId, limit: batchSize, leaseMillis }

    /**
     * What the relay knows of its lease on one round's rows. `heldUntil` is counted from before the claim or
     * renewal was sent, by the relay's clock, so it never overestimates the store's lease.
     */
    interface Lease {
      heldUntil: number
      /** The round's claimed rows. */
      readonly rows: ReadonlyArray<ClaimedRow>
      /**
       * The ids of those settled so far, or `all` once the whole claim is: a round that publishes its claim
       * in one call settles it with one assignment rather than a set operation per row.
       */
      readonly done: Set<number>
      all: boolean
      readonly lost: Set<number>
    }
    const unsettledIds = (lease: Lease): Array<number> => {
      const ids: Array<number> = []
      if (lease.all) return ids
      for (const row of lease.rows) if (!lease.done.has(row.id)) ids.push(row.id)
      return ids
    }

    // A publish starts only with a heartbeat's worth of lease left: if the renewals fail, the relay stops
    // starting publishes before another relay may claim the rows.
    const mayPublish = (lease: Lease, row: ClaimedRow) =>
      Effect.map(Clock.currentTimeMillis, (now) => !lease.lost.has(row.id) && now + heartbeatMillis < lease.heldUntil)
    const publishable = (lease: Lease, rows: ReadonlyArray<ClaimedRow>) =>
      Effect.map(Clock.currentTimeMillis, (now) =>
        now + heartbeatMillis < lease.heldUntil
          ? (lease.lost.size === 0 ? rows : rows.filter((row) => !lease.lost.has(row.id)))
          : [])

    // The round in flight, whose rows `run`'s heartbeat fiber renews. One long-lived fiber rather than one
    // per round: forking and interrupting a fiber per round cost more than the rest of a small round.
    let current: Lease | undefined
    const roundStarted = yield* Queue.sliding<void>(1)

    const renewOnce = (lease: Lease) =>
      Effect.gen(function*() {
        const ids = unsettledIds(lease)
        if (ids.length === 0) return
        const sent = yield* Clock.currentTimeMillis
        const renewed = new Set(yield* store.renew(relayId, ids, leaseMillis))
        lease.heldUntil = sent + leaseMillis
        // A row settled meanwhile is not renewed either; only one still unsettled was taken over.
        const lost = ids.filter((id) => !renewed.has(id) && !lease.all && !lease.done.has(id))
        if (lost.length > 0) {
          for (const id of lost) lease.lost.add(id)
          yield* Effect.logWarning(`outbox relay: lost the lease of ${lost.length} row(s) being published; leaving them to their new holder`)
        }
      }).pipe(
        // A failed renewal is retried at the next beat; meanwhile `heldUntil` runs out and publishing stops.
        quietly("outbox relay: lease renewal failed")
      )

    // Idle between rounds (it waits for one to start, with no timer), then beats while a round is in flight.
    const heartbeat: Effect.Effect<never> = Effect.gen(function*() {
      yield* Queue.take(roundStarted)
      while (current !== undefined) {
        yield* Effect.sleep(Duration.millis(heartbeatMillis))
        if (current !== undefined) yield* renewOnce(current)
      }
    }).pipe(Effect.forever)

    const settled = (lease: Lease, rows: ReadonlyArray<ClaimedRow>) =>
      Effect.sync(() => {
        if (rows === lease.rows) lease.all = true
        else for (const row of rows) lease.done.add(row.id)
      })

    const fail = (lease: Lease, row: ClaimedRow, error: unknown) =>
      Effect.gen(function*() {
        const record = yield* Failure.record(error)
        if (lease.lost.has(row.id)) return yield* Effect.as(settled(lease, [row]), "abandoned" as const)
        const attempts = row.attempts + 1
        if (record.classification === "transient" && attempts < maxAttempts) {
          const delayMillis = backoffMillis(backoffBase, backoffMax, attempts)
          yield* settled(lease, [row])
          yield* store.reschedule(relayId, row.id, { attempts, error: record, delayMillis })
          return "retried" as const
        }
        if (!(yield* mayPublish(lease, row))) return yield* Effect.as(settled(lease, [row]), "abandoned" as const)
        const reason = new Delivery.DeadLetterReason({ category: record.category, error: record, attempts })
        const copy = yield* publisher.publish(Delivery.deadLetterTopic(row.topic), [{
          ...row.message,
          headers: Delivery.deadLetterHeaders({ ...row.message, topic: row.topic }, reason)
        }]).pipe(
          Effect.tapError((e) => Effect.logWarning(`outbox: dead-letter copy of ${row.message.id} not published; the row stays dead`, e)),
          Effect.either
        )
        yield* settled(lease, [row])
        yield* store.markDead(relayId, row.id, { attempts, error: record, deadLetterPublished: Either.isRight(copy) })
        return "dead" as const
      })

    const settleTopic = (lease: Lease, topic: string, claimed: ReadonlyArray<ClaimedRow>) =>
      Effect.gen(function*() {
        const rows = yield* publishable(lease, claimed)
        const result = { published: 0, retried: 0, dead: 0, abandoned: claimed.length - rows.length, stopped: new Set<string>() }
        // Abandoned rows are no longer renewed, so they return to other relays when the lease runs out.
        if (rows.length < claimed.length) {
          const left = claimed.filter((row) => !rows.includes(row))
          for (const row of left) result.stopped.add(row.message.key)
          yield* settled(lease, left)
        }
        if (rows.length === 0) return result
        const whole = yield* Effect.either(publisher.publish(topic, rows.map((r) => r.message)))
        if (Either.isRight(whole)) {
          // Settled before the mark, so a heartbeat returning meanwhile does not take them for lost.
          yield* settled(lease, rows)
          yield* store.markPublished(relayId, rows.map((r) => r.id), keep)
          result.published = rows.length
          return result
        }
        // Isolate the failing rows so one bad message does not hold back its batch.
        // `result` undefined: not published, since the lease could no longer be confirmed.
        type Outcome = { readonly row: ClaimedRow; readonly result: Either.Either<void, Transport.PublishError> | undefined }
        const outcomes: ReadonlyArray<Outcome> = rows.length === 1
          ? [{ row: rows[0]!, result: whole }]
          : yield* Effect.forEach(rows, (row): Effect.Effect<Outcome> =>
            Effect.flatMap(mayPublish(lease, row), (may): Effect.Effect<Outcome> =>
              may
                ? Effect.map(Effect.either(publisher.publish(topic, [row.message])), (result) => ({ row, result }))
                : Effect.succeed({ row, result: undefined })))
        const ok = outcomes.filter((o) => o.result !== undefined && Either.isRight(o.result)).map((o) => o.row)
        yield* settled(lease, ok)
        yield* store.markPublished(relayId, ok.map((r) => r.id), keep)
        result.published = ok.length
        for (const outcome of outcomes) {
          if (outcome.result === undefined) {
            result.abandoned++
            result.stopped.add(outcome.row.message.key)
            yield* settled(lease, [outcome.row])
          } else if (Either.isLeft(outcome.result)) {
            const verdict = yield* fail(lease, outcome.row, outcome.result.left)
            result[verdict]++
            // A dead row no longer holds its key back; a retried or abandoned one does.
            if (verdict !== "dead") result.stopped.add(outcome.row.message.key)
          }
        }
        return result
      })

    // A claim may hold several rows of a key (a partitioned store reads a partition's rows in order): the
    // batch is published in waves, the n-th row of each key in wave n, each wave once the previous one is
    // settled, so a key's rows are never in flight together. Keyless rows are unordered: all in the first wave.
    // A row-leasing store's claim holds at most one row per key: one wave, as before. A claim that is one wave
    // is answered as is (the same array), which lets the round settle it whole.
    const waves = (rows: ReadonlyArray<ClaimedRow>): ReadonlyArray<ReadonlyArray<ClaimedRow>> => {
      const seen = new Map<string, number>()
      let result: Array<Array<ClaimedRow>> | undefined
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i]!
        const key = row.message.key
        const wave = key === "" ? 0 : (seen.get(key) ?? 0)
        if (key !== "") seen.set(key, wave + 1)
        if (result === undefined) {
          if (wave === 0) continue
          // Every row before this one is in the first wave.
          result = [rows.slice(0, i)]
        }
        const list = result[wave]
        if (list) list.push(row)
        else result[wave] = [row]
      }
      return result ?? [rows]
    }
    // The topic all rows of `rows` share, if they do (the usual claim: one topic).
    const oneTopic = (rows: ReadonlyArray<ClaimedRow>): string | undefined => {
      const topic = rows[0]?.topic
      for (const row of rows) if (row.topic !== topic) return undefined
      return topic
    }

    const round: Effect.Effect<RoundResult, OutboxStoreError> = Effect.gen(function*() {
      const sent = yield* Clock.currentTimeMillis
      const rows = yield* store.claim(claimRequest)
      const result = { claimed: rows.length, published: 0, retried: 0, dead: 0, abandoned: 0, deferred: 0 }
      if (rows.length === 0) return result
      const lease: Lease = { heldUntil: sent + leaseMillis, rows, done: new Set(), all: false, lost: new Set() }
      current = lease
      Queue.unsafeOffer(roundStarted, undefined)
      return yield* Effect.gen(function*() {
        // Keys whose row was retried or abandoned this round: their later rows wait for a later claim.
        const stopped = new Set<string>()
        const tally = (r: Effect.Effect.Success<ReturnType<typeof settleTopic>>) => {
          result.published += r.published
          result.retried += r.retried
          result.dead += r.dead
          result.abandoned += r.abandoned
          for (const key of r.stopped) stopped.add(key)
        }
        for (const wave of waves(rows)) {
          const topic = stopped.size === 0 ? oneTopic(wave) : undefined
          if (topic !== undefined) {
            tally(yield* settleTopic(lease, topic, wave))
            continue
          }
          const byTopic = new Map<string, Array<ClaimedRow>>()
          for (const row of wave) {
            if (row.message.key !== "" && stopped.has(row.message.key)) {
              result.deferred++
              yield* settled(lease, [row])
              continue
            }
            const list = byTopic.get(row.topic)
            if (list) list.push(row)
            else byTopic.set(row.topic, [row])
          }
          for (const [topic, list] of byTopic) tally(yield* settleTopic(lease, topic, list))
        }
        return result
      }).pipe(Effect.ensuring(Effect.sync(() => {
        if (current === lease) current = undefined
      })))
    })

    const cleanup = store.cleanup(retentionMillis)

    const updateMetrics = Effect.gen(function*() {
      const count = yield* store.backlog
      const age = yield* store.lag
      yield* Metric.set(backlogGauge, count)
      yield* Metric.set(lagGauge, Duration.toMillis(age))
    })

    // Once its rounds have ended (the finalizer runs after the loop, the heartbeat and the wake-up have
    // stopped), a stopping relay hands back what it holds, so the other relays go on at once rather than after
    // the lease. Bounded: a database that stopped answering does not hold the stop; the lease still runs out.
    const handBack = store.release === undefined ? Effect.void : store.release(relayId).pipe(
      Effect.interruptible,
      Effect.timeout("5 seconds"),
      quietly("outbox relay: hand-back on stop failed")
    )

    // Supervised: a failing round (the database or the broker is down) makes the relay `degraded` and retries
    // with a jittered, capped backoff until it is back; a defect ends `run` loudly (Supervise), never silently.
    const run: Effect.Effect<never, never, Scope.Scope> = Effect.zipRight(Effect.addFinalizer(() => handBack), Supervise.run({
      name: `outbox-relay:${relayId}`,
      backoffMax: Duration.max(pollInterval, Duration.seconds(5))
    }, (supervisor) => Effect.gen(function*() {
      const wakeup = yield* store.wakeup(relayId, pollInterval)
      yield* Effect.forkScoped(heartbeat)
      yield* cleanup.pipe(
        quietly("outbox relay: cleanup failed"),
        Effect.zipRight(Effect.sleep(options.cleanupInterval ?? "1 minute")),
        Effect.forever,
        Effect.forkScoped
      )
      yield* updateMetrics.pipe(
        quietly("outbox relay: metrics refresh failed"),
        Effect.zipRight(Effect.sleep(options.metricsInterval ?? "5 seconds")),
        Effect.forever,
        Effect.forkScoped
      )
      const loop: Effect.Effect<never> = Effect.gen(function*() {
        const result = yield* Effect.either(round)
        if (Either.isLeft(result)) return yield* supervisor.degraded(result.left)
        yield* supervisor.up
        if (result.right.claimed > 0) {
          yield* wakeup.found
          if (result.right.claimed < batchSize && !Duration.isZero(linger)) yield* Effect.sleep(linger)
          return
        }
        if (yield* wakeup.idle) return
        yield* wakeup.wait(pollInterval)
      }).pipe(Effect.forever)
      return yield* loop
    })))

    return { relayId, round, cleanup, run }
  })

/** Runs a side task (heartbeat, cleanup, gauges) logging only its state changes, and carries on either way. */
const quietly = (label: string) => {
  const log = Supervise.changes(label)
  return <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<void, never, R> =>
    Effect.matchEffect(self, { onFailure: log.failed, onSuccess: () => log.ok })
}

/** Runs a relay until interrupted. */
export const run = (options: Options = {}): Effect.Effect<never, never, OutboxStore | Transport.Publisher> =>
  Effect.scoped(Effect.flatMap(make(options), (relay) => relay.run))

/**
 * Runs a relay in the background for the layer's lifetime. A fatal fault (a defect) is logged at `Fatal` and the
 * relay is `failed` in `Supervise.health`, but the application keeps running: to have it end the application,
 * use {@link layerMonitored} with {@link guard} or {@link awaitFatal}.
 */
export const layer = (
  options: Options = {}
): Layer.Layer<never, never, OutboxStore | Transport.Publisher> =>
  Layer.scopedDiscard(Effect.forkScoped(run(options)))

/**
 * The relay of {@link layerMonitored} stopped for good: a defect (or a permanent fault) ended its supervised loop,
 * so nothing more leaves the outbox until the process restarts. Permanent, category `dependency`: retrying in the
 * same process would not help.
 */
export class RelayFailed extends Data.TaggedError("RelayFailed")<{
  readonly relayId: string
  readonly cause: Cause.Cause<unknown>
}> {
  override get message(): string {
    return `outbox relay ${this.relayId} stopped by a fatal fault: ${Cause.pretty(this.cause)}`
  }

  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("permanent", "dependency")
  }
}

/** Watches the relay run by {@link layerMonitored}. */
export class RelayMonitor extends Context.Tag("@bulwark/outbox/RelayMonitor")<RelayMonitor, {
  readonly relayId: string
  /** Never succeeds; fails with {@link RelayFailed} once the relay gives up (it never does for transient faults). */
  readonly awaitFatal: Effect.Effect<never, RelayFailed>
}>() {}

/**
 * {@link layer}, plus a {@link RelayMonitor} through which a fatal fault of the relay reaches the application:
 * pair it with {@link guard} (or race {@link awaitFatal}) so that the program fails with {@link RelayFailed}
 * instead of running on with its outbox frozen.
 */
export const layerMonitored = (
  options: Options = {}
): Layer.Layer<RelayMonitor, never, OutboxStore | Transport.Publisher> =>
  Layer.scoped(
    RelayMonitor,
    Effect.gen(function*() {
      const relay = yield* make(options)
      const fatal = yield* Deferred.make<never, RelayFailed>()
      yield* relay.run.pipe(
        Effect.onExit((exit) =>
          // Interruption is the layer closing, not a fault.
          Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)
            ? Deferred.fail(fatal, new RelayFailed({ relayId: relay.relayId, cause: exit.cause }))
            : Effect.void
        ),
        Effect.forkScoped
      )
      return { relayId: relay.relayId, awaitFatal: Deferred.await(fatal) }
    })
  )

/** Fails with {@link RelayFailed} when the monitored relay gives up; never succeeds. */
export const awaitFatal: Effect.Effect<never, RelayFailed, RelayMonitor> = Effect.flatMap(RelayMonitor, (monitor) => monitor.awaitFatal)

/**
 * Runs `program` while watching the monitored relay: if the relay gives up first, `program` is interrupted and
 * the result is a {@link RelayFailed} failure (so `NodeRuntime.runMain` exits non-zero and the process is
 * restarted); otherwise `program`'s own result.
 */
export const guard = <A, E, R>(program: Effect.Effect<A, E, R>): Effect.Effect<A, E | RelayFailed, R | RelayMonitor> =>
  Effect.raceFirst(program, awaitFatal)
