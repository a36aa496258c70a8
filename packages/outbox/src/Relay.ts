/**
 * The outbox relay: claims pending rows, publishes them through any `Transport.Publisher`, marks them
 * published. Run one per process, as many processes as you like.
 *
 * - **Claim**: one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)` sets `claimed_by` and a lease
 *   (`claimed_until`). Concurrent relays skip each other's rows; a crashed relay's rows are claimable again
 *   once its lease expires, so they are published at least once (possibly twice: publish is not atomic
 *   with the mark).
 * - **Order per key**: only the oldest pending row of a key is claimable, so a key's next row is not
 *   published before the previous one is confirmed (or dead). Rows with key `""` are not ordered.
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
 * - **Retention**: published rows older than `retention` are deleted every `cleanupInterval`.
 */
import { Delivery, Failure } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Deferred, Duration, Effect, Either, Layer, Queue, Schedule, Schema, Stream } from "effect"
import { Outbox, updateMetrics } from "./Outbox.js"

/** Settings of a relay; every field has a default. */
export interface Options {
  /** Rows claimed per round. Default 200. */
  readonly batchSize?: number
  /** How long a claim holds before another relay may take the rows. Default 30 s. */
  readonly lease?: Duration.DurationInput
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
  /** How long published rows are kept. Default 1 day. */
  readonly retention?: Duration.DurationInput
  /** How often published rows past retention are deleted. Default 1 minute. */
  readonly cleanupInterval?: Duration.DurationInput
  /** How often the backlog and lag gauges are refreshed. Default 5 s. */
  readonly metricsInterval?: Duration.DurationInput
  /** This relay's name in `claimed_by`. Default a random id. */
  readonly relayId?: string
}

interface ClaimedRow {
  readonly id: number
  readonly topic: string
  readonly message_id: string
  readonly key: string
  readonly payload: Uint8Array
  readonly headers: string
  readonly attempts: number
}

const encodeRecord = Schema.encodeSync(Schema.parseJson(Failure.FailureRecord))

/** Exponential backoff: `base * 2^(attempt-1)`, capped at `max`. */
export const backoffMillis = (base: number, max: number, attempt: number): number =>
  Math.min(max, base * 2 ** Math.max(0, attempt - 1))

const randomId = () => `relay-${process.pid}-${Math.random().toString(36).slice(2, 10)}`

/** What one relay round did. */
export interface RoundResult {
  readonly claimed: number
  readonly published: number
  readonly retried: number
  readonly dead: number
}

/**
 * The relay's steps over the outbox in context: `round` claims and settles one batch; `run` loops forever.
 */
export const make = (options: Options = {}) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const db = yield* Database.Database
    const outbox = yield* Outbox
    const publisher = yield* Transport.Publisher
    const table = outbox.table
    const relayId = options.relayId ?? randomId()
    const batchSize = Math.max(1, Math.floor(options.batchSize ?? 200))
    const leaseMillis = Duration.toMillis(Duration.decode(options.lease ?? "30 seconds"))
    // An idle relay polls at least once a minute, which also refreshes its sleeper registration.
    const pollInterval = Duration.min(Duration.decode(options.pollInterval ?? "1 second"), Duration.minutes(1))
    const linger = Duration.decode(options.linger ?? "10 millis")
    const maxAttempts = Math.max(1, Math.floor(options.maxAttempts ?? 10))
    const backoffBase = Duration.toMillis(Duration.decode(options.backoffBase ?? "500 millis"))
    const backoffMax = Duration.toMillis(Duration.decode(options.backoffMax ?? "5 minutes"))
    const retentionMillis = Duration.toMillis(Duration.decode(options.retention ?? "1 day"))

    // The relay's own bookkeeping commits asynchronously (`synchronous_commit = off` for that statement only):
    // a server crash may forget the last claims or marks, which costs a lease wait or a duplicate publish,
    // never a row, while the appends themselves stay durable. Both statements run once per round, so their
    // text is built once (the table name is a checked identifier) and only the parameters change.
    const claimText = `
      WITH claimed AS (
      UPDATE "${table}" SET claimed_by = $1, claimed_until = now() + ($2::float8 * interval '1 millisecond')
      WHERE id IN (
        SELECT c.id FROM "${table}" c
        WHERE c.state = 'pending' AND c.available_at <= now()
          AND (c.claimed_until IS NULL OR c.claimed_until < now())
          AND (c.key = '' OR NOT EXISTS (
            SELECT 1 FROM "${table}" p WHERE p.state = 'pending' AND p.key = c.key AND p.id < c.id))
        ORDER BY c.id
        LIMIT $3
        FOR UPDATE SKIP LOCKED)
      RETURNING id, topic, message_id, key, payload, headers, attempts)
      SELECT claimed.*, set_config('synchronous_commit', 'off', true) AS async_commit FROM claimed`
    const claimParams = [relayId, leaseMillis, batchSize]
    const claim = Effect.map(
      sql.unsafe<ClaimedRow>(claimText, claimParams),
      (rows) => [...rows].sort((a, b) => Number(a.id) - Number(b.id))
    )

    // One statement: mark the rows this relay still holds, and tell `drained` waiters. The ids travel as one
    // array parameter, so the statement text is the same for any batch size instead of one placeholder per row.
    const markText = `
      WITH marked AS (
        UPDATE "${table}" SET state = 'published', published_at = now(), attempts = attempts + 1,
          claimed_by = NULL, claimed_until = NULL
        WHERE id = ANY($1::bigint[]) AND claimed_by = $2
        RETURNING id)
      SELECT pg_notify($3, count(*)::text), set_config('synchronous_commit', 'off', true)
      FROM marked`
    const markPublished = (ids: ReadonlyArray<number>) =>
      ids.length === 0 ? Effect.void : Effect.asVoid(sql.unsafe(markText, [ids, relayId, outbox.settledChannel]))

    const toMessage = (row: ClaimedRow): Transport.OutgoingMessage => ({
      id: row.message_id,
      key: row.key,
      payload: new Uint8Array(row.payload),
      headers: JSON.parse(row.headers) as Record<string, string>
    })

    const fail = (row: ClaimedRow, error: unknown) =>
      Effect.gen(function*() {
        const record = yield* Failure.record(error)
        const attempts = row.attempts + 1
        if (record.classification === "transient" && attempts < maxAttempts) {
          const delay = backoffMillis(backoffBase, backoffMax, attempts)
          yield* sql`UPDATE ${sql(table)} SET attempts = ${attempts}, last_error = ${encodeRecord(record)},
              available_at = now() + (${delay}::float8 * interval '1 millisecond'), claimed_by = NULL, claimed_until = NULL
            WHERE id = ${row.id} AND claimed_by = ${relayId}`
          return "retried" as const
        }
        const message = toMessage(row)
        const reason = new Delivery.DeadLetterReason({ category: record.category, error: record, attempts })
        const copy = yield* publisher.publish(Delivery.deadLetterTopic(row.topic), [{
          ...message,
          headers: Delivery.deadLetterHeaders({ ...message, topic: row.topic }, reason)
        }]).pipe(
          Effect.tapError((e) => Effect.logWarning(`outbox: dead-letter copy of ${row.message_id} not published; the row stays dead`, e)),
          Effect.either
        )
        yield* sql`
          WITH marked AS (
            UPDATE ${sql(table)} SET state = 'dead', attempts = ${attempts}, last_error = ${encodeRecord(record)},
              dead_letter_published = ${Either.isRight(copy)}, claimed_by = NULL, claimed_until = NULL
            WHERE id = ${row.id} AND claimed_by = ${relayId}
            RETURNING id)
          SELECT pg_notify(${outbox.settledChannel}, count(*)::text) FROM marked`
        return "dead" as const
      })

    const settleTopic = (topic: string, rows: ReadonlyArray<ClaimedRow>) =>
      Effect.gen(function*() {
        const whole = yield* Effect.either(publisher.publish(topic, rows.map(toMessage)))
        if (Either.isRight(whole)) {
          yield* markPublished(rows.map((r) => r.id))
          return { published: rows.length, retried: 0, dead: 0 }
        }
        // Isolate the failing rows so one bad message does not hold back its batch.
        const outcomes = rows.length === 1
          ? [{ row: rows[0]!, result: whole }]
          : yield* Effect.forEach(rows, (row) =>
            Effect.map(Effect.either(publisher.publish(topic, [toMessage(row)])), (result) => ({ row, result })))
        yield* markPublished(outcomes.filter((o) => Either.isRight(o.result)).map((o) => o.row.id))
        let retried = 0
        let dead = 0
        for (const outcome of outcomes) {
          if (Either.isLeft(outcome.result)) {
            const what = yield* fail(outcome.row, outcome.result.left)
            if (what === "dead") dead++
            else retried++
          }
        }
        return { published: outcomes.length - retried - dead, retried, dead }
      })

    /** Claims one batch and publishes it; answers what happened. */
    const round: Effect.Effect<RoundResult, SqlError> = Effect.gen(function*() {
      const rows = yield* claim
      const byTopic = new Map<string, Array<ClaimedRow>>()
      for (const row of rows) {
        const list = byTopic.get(row.topic)
        if (list) list.push(row)
        else byTopic.set(row.topic, [row])
      }
      const result = { claimed: rows.length, published: 0, retried: 0, dead: 0 }
      for (const [topic, list] of byTopic) {
        const r = yield* settleTopic(topic, list)
        result.published += r.published
        result.retried += r.retried
        result.dead += r.dead
      }
      return result
    })

    // A sleeper refreshes its registration when it is over 30 s old (an idle relay polls at least once a
    // minute); one older than five minutes belongs to a relay that died asleep, and would make every append
    // notify for nothing.
    const sleepers = outbox.sleepersTable
    const registerText = `INSERT INTO "${sleepers}" (relay_id) VALUES ($1) ON CONFLICT (relay_id) DO UPDATE SET since = now()`
    const deregisterText = `DELETE FROM "${sleepers}" WHERE relay_id = $1`
    const register = Effect.asVoid(sql.unsafe(registerText, [relayId]))
    const deregister = Effect.asVoid(sql.unsafe(deregisterText, [relayId]))

    /** Deletes published rows older than the retention (and stale sleeper entries); answers how many rows. */
    const cleanup = Effect.zipLeft(
      Effect.map(
        sql`DELETE FROM ${sql(table)} WHERE state = 'published'
          AND published_at < now() - (${retentionMillis}::float8 * interval '1 millisecond') RETURNING id`,
        (rows) => rows.length
      ),
      sql`DELETE FROM ${sql(sleepers)} WHERE since < now() - interval '5 minutes'`
    )

    const run: Effect.Effect<never, never, import("effect/Scope").Scope> = Effect.gen(function*() {
      // A wake-up only says "something committed since the last claim", so one slot is enough: a burst of
      // notifications while a round runs folds into a single extra claim instead of one per notification.
      const wake = yield* Queue.sliding<void>(1)
      // Only the appends' default mode reads the sleepers table. The relay registers there only once it has
      // heard its own probe on the channel: registered but not yet listening, it would miss the very
      // notifications its registration asks for.
      const registers = outbox.notify === true
      const probe = `probe:${relayId}`
      const listening = yield* Deferred.make<void>()
      yield* db.listen(outbox.channel).pipe(
        Stream.runForEach((payload) => payload === probe ? Deferred.succeed(listening, undefined) : Queue.offer(wake, undefined)),
        Effect.tapError((e) => Effect.logWarning("outbox relay: LISTEN failed; polling until it is back", e)),
        Effect.retry(Schedule.spaced("1 second")),
        Effect.forkScoped
      )
      yield* cleanup.pipe(
        Effect.tapError((e) => Effect.logWarning("outbox relay: cleanup failed", e)),
        Effect.ignore,
        Effect.schedule(Schedule.spaced(options.cleanupInterval ?? "1 minute")),
        Effect.forever,
        Effect.forkScoped
      )
      yield* updateMetrics.pipe(
        Effect.provideService(Outbox, outbox),
        Effect.tapError((e) => Effect.logWarning("outbox relay: metrics refresh failed", e)),
        Effect.ignore,
        Effect.zipRight(Effect.sleep(options.metricsInterval ?? "5 seconds")),
        Effect.forever,
        Effect.forkScoped
      )
      let asleep = false
      let registeredAt = 0
      let busyRounds = 0
      // Deregisters even when not known to be asleep: an interrupted registration may still have landed.
      if (registers) yield* Effect.addFinalizer(() => deregister.pipe(Effect.timeout("1 second"), Effect.ignore))
      const setAsleep = (value: boolean) =>
        (value ? register : deregister).pipe(
          Effect.zipRight(Clock.currentTimeMillis),
          Effect.map((now) => {
            asleep = value
            registeredAt = now
            return true
          }),
          Effect.tapError((e) => Effect.logWarning("outbox relay: could not update its sleeper registration", e)),
          Effect.orElseSucceed(() => false)
        )
      const nap = Queue.take(wake).pipe(Effect.timeout(pollInterval), Effect.ignore)
      // One probe; true once the relay has heard one. A failed NOTIFY still waits, so retries are spaced.
      const probeOnce = (wait: Duration.DurationInput) =>
        db.notify(outbox.channel, probe).pipe(
          Effect.ignore,
          Effect.zipRight(Deferred.await(listening).pipe(Effect.timeout(wait))),
          Effect.isSuccess
        )
      if (registers) {
        // LISTEN is normally up within milliseconds: wait for it (up to 1 s) before the first claim, so the
        // relay does not fall asleep deaf. Without it the relay only polls, and keeps probing in the background.
        let heard = false
        for (let attempt = 0; attempt < 50 && !heard; attempt++) heard = yield* probeOnce("20 millis")
        if (!heard) {
          yield* Effect.logWarning("outbox relay: LISTEN not confirmed; polling every pollInterval until it is")
          yield* probeOnce(pollInterval).pipe(Effect.repeat({ until: (heard) => heard }), Effect.forkScoped)
        }
      }
      const loop: Effect.Effect<never> = Effect.gen(function*() {
        const result = yield* Effect.either(round)
        if (Either.isLeft(result)) {
          yield* Effect.logWarning("outbox relay: round failed; retrying after the poll interval", result.left)
          return yield* nap
        }
        if (result.right.claimed > 0) {
          // Two rounds in a row with rows: the relay will keep claiming by itself, so appends need not notify.
          if (asleep && ++busyRounds >= 2) yield* setAsleep(false)
          if (result.right.claimed < batchSize && !Duration.isZero(linger)) yield* Effect.sleep(linger)
          return
        }
        busyRounds = 0
        // Appends that committed while the relay was not registered sent no notification: claim once more.
        if (registers && !asleep && (yield* Deferred.isDone(listening)) && (yield* setAsleep(true))) return
        if (asleep && (yield* Clock.currentTimeMillis) - registeredAt > 30_000) yield* setAsleep(true)
        yield* nap
      }).pipe(Effect.forever)
      return yield* loop
    })

    return { relayId, round, cleanup, run }
  })

/** Runs a relay until interrupted. */
export const run = (options: Options = {}) => Effect.scoped(Effect.flatMap(make(options), (relay) => relay.run))

/** Runs a relay in the background for the layer's lifetime. */
export const layer = (
  options: Options = {}
): Layer.Layer<never, never, Outbox | SqlClient.SqlClient | Database.Database | Transport.Publisher> =>
  Layer.scopedDiscard(Effect.forkScoped(run(options)))
