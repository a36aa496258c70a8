/**
 * The change-data-capture relay for PostgreSQL (Debezium's approach): instead of polling the outbox table it
 * reads the table's committed inserts from a logical replication slot (`pgoutput`), in commit order, and
 * publishes them through the `Transport.Publisher` in context. The polling `Relay` stays the default (PGlite
 * and databases without `wal_level = logical` have no replication); this one needs PostgreSQL ≥ 10 with
 * `wal_level = logical` and a role with the `REPLICATION` attribute (or superuser).
 *
 * - **Setup** (idempotent, at every start): `CREATE PUBLICATION <table>_cdc FOR TABLE <table> WITH (publish =
 *   'insert')`, a `pgoutput` slot named after the relay (`bulwark_cdc_<name>`), and a bookkeeping row in
 *   `<table>_cdc`. Rows committed before the slot existed are not in its stream: the first start publishes
 *   them from the table (in id order, up to the highest id at slot creation) before streaming.
 * - **Order**: transactions arrive in commit order, rows in insert order within one; a batch is published
 *   per topic in that order, so a key's events are published in the order their transactions committed.
 * - **Confirmation**: after the transport confirmed a batch, its rows are deleted (or marked `published` when
 *   `retention` is set) and only then the slot's position is confirmed (standby status update, flush LSN =
 *   end of the last whole transaction published). A crash before the confirmation redelivers from the last
 *   confirmed position: events are published at least once, duplicates are redeliveries that consumers
 *   absorb by the message id (`@bulwark/idempotency`). Nothing is deleted before it was published.
 * - **Failures**: a failed batch is retried row by row; a row that fails transiently is retried in place with
 *   exponential backoff (the stream waits: later events of its key must not overtake it), up to `maxAttempts`;
 *   then, or at once for a permanent failure, it is dead: `state = 'dead'` with the error, and a copy goes to
 *   `Delivery.deadLetterTopic(topic)`, as the polling relay does.
 * - **Faults**: supervised like the polling relay (`Supervise`): a lost connection or a server restart makes
 *   the relay `degraded`; it reconnects with a jittered, capped backoff and resumes from the slot's
 *   confirmed position. `layerMonitored` provides `Relay.RelayMonitor`, so `Relay.guard` works unchanged.
 * - **Exclusive with the polling relay**: both publish pending rows, so running both on one table publishes
 *   rows twice. Switch over by stopping the polling relays, then starting this one (rows left pending are
 *   published by its first start); to switch back, stop it and drop its slot (`dropSlot`) so the server does
 *   not keep WAL for it.
 */
import { Delivery, Failure, Supervise } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { Cause, Data, Deferred, Duration, Effect, Either, Exit, Layer, Metric, Queue, Schema, type Scope } from "effect"
import pg from "pg"
import * as Pgoutput from "./internal/cdc/pgoutput.js"
import * as CdcStream from "./internal/cdc/stream.js"
import { type Row, toClaimed } from "./internal/rows.js"
import { backlogGauge, lagGauge } from "./Outbox.js"
import type { ClaimedRow } from "./OutboxStore.js"
import { RelayFailed, RelayMonitor } from "./Relay.js"

/** Settings of a change-data-capture relay. */
export interface Options {
  /** How to reach the database: a connection string or `pg` client settings. */
  readonly connection: string | pg.ClientConfig
  /** The outbox table. Default `bulwark_outbox`. */
  readonly table?: string
  /** The relay's name: its slot is `bulwark_cdc_<name>`. Lowercase letters, digits and `_`. Default `default`. */
  readonly name?: string
  /** Rows published (and deleted) per batch at most; whole transactions. Default 1000. */
  readonly batchSize?: number
  /** Publish attempts of a row before it is dead. Default 10. */
  readonly maxAttempts?: number
  /** Delay after a row's first failure; doubles per attempt. Default 500 ms. */
  readonly backoffBase?: Duration.DurationInput
  /** Longest delay between a row's attempts. Default 5 minutes. */
  readonly backoffMax?: Duration.DurationInput
  /** Keep published rows as `published` this long instead of deleting them. Default: deleted once published. */
  readonly retention?: Duration.DurationInput
  /** How often rows past `retention` are deleted. Default 1 minute. */
  readonly cleanupInterval?: Duration.DurationInput
  /** How often the backlog and lag gauges (`Outbox.backlogGauge`, `Outbox.lagGauge`) are refreshed. Default 5 s. */
  readonly metricsInterval?: Duration.DurationInput
  /** How often the position is reported to the server while idle (under `wal_sender_timeout`). Default 10 s. */
  readonly statusInterval?: Duration.DurationInput
}

/** The database refused or lost a CDC statement or the replication stream. Transient, category `dependency`. */
export class CdcError extends Data.TaggedError("OutboxCdcError")<{
  readonly operation: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }
  override get message(): string {
    return `outbox CDC ${this.operation} failed: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** The relay's name or the table is not a plain lowercase SQL identifier. Permanent, category `unknown`. */
export class InvalidRelayName extends Data.TaggedError("OutboxCdcInvalidName")<{ readonly name: string }> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: "unknown" }
  }
  override get message(): string {
    return `outbox CDC relay: ${JSON.stringify(this.name)} is not a plain identifier (lowercase letters, digits and _; a name at most 48 characters, a table 56)`
  }
}

/** A relay built by {@link make}. */
export interface CdcRelay {
  readonly name: string
  /** The replication slot it reads. */
  readonly slot: string
  /** The publication it subscribes to. */
  readonly publication: string
  /** Streams and publishes until interrupted, reconnecting after faults (which are all transient). */
  readonly run: Effect.Effect<never, CdcError, Scope.Scope>
}

const tableName = /^[a-z_][a-z0-9_]*$/
const encodeRecord = Schema.encodeSync(Schema.parseJson(Failure.FailureRecord))

/** The relay over the `Transport.Publisher` in context; nothing connects until `run`. */
export const make = (options: Options): Effect.Effect<CdcRelay, InvalidRelayName, Transport.Publisher> =>
  Effect.gen(function*() {
    const publisher = yield* Transport.Publisher
    const name = options.name ?? "default"
    const table = options.table ?? "bulwark_outbox"
    if (!tableName.test(name) || name.length > 48) return yield* Effect.fail(new InvalidRelayName({ name }))
    if (!tableName.test(table) || table.length > 56) return yield* Effect.fail(new InvalidRelayName({ name: table }))
    const slot = `bulwark_cdc_${name}`
    const publication = `${table}_cdc`
    const bookkeeping = `${table}_cdc`
    const settledChannel = `${table}_settled`
    const batchSize = Math.max(1, Math.floor(options.batchSize ?? 1000))
    const maxAttempts = Math.max(1, Math.floor(options.maxAttempts ?? 10))
    const backoffBase = Duration.toMillis(Duration.decode(options.backoffBase ?? "500 millis"))
    const backoffMax = Duration.toMillis(Duration.decode(options.backoffMax ?? "5 minutes"))
    const retentionMillis = options.retention === undefined ? undefined : Duration.toMillis(Duration.decode(options.retention))
    const statusInterval = Duration.toMillis(Duration.decode(options.statusInterval ?? "10 seconds"))
    const base: pg.ClientConfig = typeof options.connection === "string" ? { connectionString: options.connection } : options.connection

    const connect = (replication: boolean) =>
      Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            // bytea in hex: the stream's values are the server's text output, decoded as such.
            const client = new pg.Client({
              ...base,
              ...(replication ? { replication: "database" } : {}),
              options: [base.options, "-c bytea_output=hex"].filter(Boolean).join(" ")
            })
            // An error after connecting reaches the session through its own listener; this one keeps it from
            // being an uncaught 'error' event.
            client.on("error", () => undefined)
            await client.connect()
            return client
          },
          catch: (cause) => new CdcError({ operation: replication ? "replication connect" : "connect", cause })
        }),
        (client) => Effect.promise(() => client.end().catch(() => undefined))
      )

    const query = <T extends pg.QueryResultRow>(client: pg.Client, operation: string, text: string, values?: Array<unknown>) =>
      Effect.tryPromise({
        try: () => client.query<T>(text, values),
        catch: (cause) => new CdcError({ operation, cause })
      })

    // Idempotent; a concurrent relay creating the same object first is not an error.
    const ignoreDuplicate = (self: Effect.Effect<unknown, CdcError>) =>
      Effect.catchIf(self, (e) => ["42710", "42P07", "23505"].includes((e.cause as { code?: string }).code ?? ""), () => Effect.void)

    const setup = (control: pg.Client) =>
      Effect.gen(function*() {
        const publications = yield* query(control, "setup", `SELECT 1 FROM pg_publication WHERE pubname = $1`, [publication])
        if (publications.rowCount === 0) {
          yield* ignoreDuplicate(query(control, "create publication", `CREATE PUBLICATION "${publication}" FOR TABLE "${table}" WITH (publish = 'insert')`))
        }
        yield* ignoreDuplicate(query(control, "setup", `CREATE TABLE IF NOT EXISTS "${bookkeeping}" (slot text PRIMARY KEY, backfill_upto bigint NOT NULL)`))
        const slots = yield* query(control, "setup", `SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [slot])
        if (slots.rowCount === 0) {
          // -1 until the slot exists: a new slot (also one dropped and created again) starts with a backfill,
          // even when the relay dies between creating the slot and recording how far the backfill goes.
          yield* query(control, "setup", `INSERT INTO "${bookkeeping}" (slot, backfill_upto) VALUES ($1, -1)
            ON CONFLICT (slot) DO UPDATE SET backfill_upto = -1`, [slot])
          yield* ignoreDuplicate(query(control, "create slot", `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]))
        }
        // Read after the slot exists: every row committed before it has an id up to this one. Rows above it
        // are in the stream; rows at or below it committed later are in both (published twice, harmlessly).
        yield* query(control, "setup", `INSERT INTO "${bookkeeping}" (slot, backfill_upto)
          SELECT $1, coalesce(max(id), 0) FROM "${table}"
          ON CONFLICT (slot) DO UPDATE SET backfill_upto = excluded.backfill_upto WHERE "${bookkeeping}".backfill_upto = -1`, [slot])
      })

    // Logical decoding can hand a commit over a moment before the committing backend has left the process
    // array, so a statement in another session may not see the row yet: it matches nothing, with no error, and
    // the row would stay pending for ever. Rows a statement did not reach are tried again, briefly (≈ 5 s in
    // all); one still not reached after that was removed or settled by someone else.
    const untilReached = (
      ids: ReadonlyArray<number>,
      run: (ids: ReadonlyArray<number>) => Effect.Effect<pg.QueryResult<{ ids: Array<string> | null }>, CdcError>
    ) =>
      Effect.gen(function*() {
        let left = ids
        for (let attempt = 0; left.length > 0; attempt++) {
          const result = yield* run(left)
          const reached = new Set((result.rows[0]?.ids ?? []).map(Number))
          left = left.filter((id) => !reached.has(id))
          if (left.length === 0 || attempt >= 50) return
          yield* Effect.sleep(Duration.millis(Math.min(100, 5 * 2 ** attempt)))
        }
      })

    const settle = (control: pg.Client, ids: ReadonlyArray<number>) =>
      untilReached(ids, (left) =>
        query<{ ids: Array<string> | null }>(
          control,
          "settle",
          retentionMillis === undefined
            ? `WITH gone AS (DELETE FROM "${table}" WHERE id = ANY($1::bigint[]) RETURNING id)
               SELECT array_agg(id) AS ids, set_config('synchronous_commit', 'off', true), pg_notify($2, count(*)::text) FROM gone`
            : `WITH kept AS (UPDATE "${table}" SET state = 'published', published_at = now() WHERE id = ANY($1::bigint[]) AND state = 'pending' RETURNING id)
               SELECT array_agg(id) AS ids, set_config('synchronous_commit', 'off', true), pg_notify($2, count(*)::text) FROM kept`,
          [left, settledChannel]
        ))

    const markDead = (control: pg.Client, row: ClaimedRow, attempts: number, error: Failure.FailureRecord, copied: boolean) =>
      untilReached([row.id], () =>
        query<{ ids: Array<string> | null }>(
          control,
          "mark dead",
          `WITH marked AS (UPDATE "${table}" SET state = 'dead', attempts = $2, last_error = $3, dead_letter_published = $4
             WHERE id = $1 AND state = 'pending' RETURNING id)
           SELECT array_agg(id) AS ids, pg_notify($5, count(*)::text) FROM marked`,
          [row.id, attempts, encodeRecord(error), copied, settledChannel]
        ))

    // One row, retried in place until published or dead: later rows of its key must not overtake it.
    const deliverAlone = (control: pg.Client, row: ClaimedRow, firstError: unknown) =>
      Effect.gen(function*() {
        let error = firstError
        let attempts = row.attempts
        while (true) {
          attempts++
          const record = yield* Failure.record(error)
          if (record.classification === "permanent" || attempts >= maxAttempts) {
            const reason = new Delivery.DeadLetterReason({ category: record.category, error: record, attempts })
            const copy = yield* Effect.either(publisher.publish(Delivery.deadLetterTopic(row.topic), [{
              ...row.message,
              headers: Delivery.deadLetterHeaders({ ...row.message, topic: row.topic }, reason)
            }]))
            if (Either.isLeft(copy)) yield* Effect.logWarning(`outbox CDC: dead-letter copy of ${row.message.id} not published; the row stays dead`, copy.left)
            yield* markDead(control, row, attempts, record, Either.isRight(copy))
            return false
          }
          yield* Effect.sleep(Duration.millis(Math.min(backoffMax, backoffBase * 2 ** (attempts - 1))))
          const again = yield* Effect.either(publisher.publish(row.topic, [row.message]))
          if (Either.isRight(again)) return true
          error = again.left
        }
      })

    /** Publishes rows (commit order) per topic; answers the ids published (the others are dead). */
    const deliver = (control: pg.Client, rows: ReadonlyArray<ClaimedRow>) =>
      Effect.gen(function*() {
        const byTopic = new Map<string, Array<ClaimedRow>>()
        for (const row of rows) {
          const list = byTopic.get(row.topic)
          if (list) list.push(row)
          else byTopic.set(row.topic, [row])
        }
        const published: Array<number> = []
        for (const [topic, list] of byTopic) {
          const whole = yield* Effect.either(publisher.publish(topic, list.map((r) => r.message)))
          if (Either.isRight(whole)) {
            for (const row of list) published.push(row.id)
            continue
          }
          for (const row of list) {
            const one = list.length === 1 ? whole : yield* Effect.either(publisher.publish(topic, [row.message]))
            if (Either.isRight(one) || (yield* deliverAlone(control, row, one.left))) published.push(row.id)
          }
        }
        return published
      })

    const decode = (rows: ReadonlyArray<Row>) =>
      Effect.try({ try: () => rows.map((row) => toClaimed(row)), catch: (cause) => new CdcError({ operation: "decode", cause }) })

    // Rows committed before the slot existed, read from the table in id order; the bookkeeping row remembers
    // how far it got, so a crash in between resumes it.
    const backfill = (control: pg.Client) =>
      Effect.gen(function*() {
        while (true) {
          const state = yield* query<{ upto: string }>(control, "backfill", `SELECT backfill_upto::text AS upto FROM "${bookkeeping}" WHERE slot = $1`, [slot])
          const upto = state.rows[0]?.upto ?? "0"
          if (BigInt(upto) <= 0n) return
          const pending = yield* query<Row>(
            control,
            "backfill",
            `SELECT id, topic, message_id, key, payload, headers, attempts FROM "${table}"
              WHERE state = 'pending' AND id <= $1 ORDER BY id LIMIT $2`,
            [upto, batchSize]
          )
          if (pending.rows.length === 0) {
            yield* query(control, "backfill", `UPDATE "${bookkeeping}" SET backfill_upto = 0 WHERE slot = $1`, [slot])
            return
          }
          const rows = yield* decode(pending.rows)
          yield* settle(control, yield* deliver(control, rows))
        }
      })

    const session = (supervisor: Supervise.Supervisor) =>
      Effect.scoped(Effect.gen(function*() {
        const control = yield* connect(false)
        yield* setup(control)
        yield* backfill(control)
        if (retentionMillis !== undefined) {
          const cleanup = Supervise.changes("outbox CDC: cleanup failed")
          yield* query(control, "cleanup", `DELETE FROM "${table}" WHERE state = 'published' AND published_at < now() - ($1::float8 * interval '1 millisecond')`, [retentionMillis]).pipe(
            Effect.matchEffect({ onFailure: cleanup.failed, onSuccess: () => cleanup.ok }),
            Effect.zipRight(Effect.sleep(options.cleanupInterval ?? "1 minute")),
            Effect.forever,
            Effect.forkScoped
          )
        }
        // The same gauges as the polling relay: rows not yet published, and the age of the oldest.
        const metrics = Supervise.changes("outbox CDC: metrics refresh failed")
        yield* query<{ n: number; ms: number | null }>(
          control,
          "metrics",
          `SELECT count(*)::int AS n, (extract(epoch FROM now() - min(created_at)) * 1000)::float8 AS ms
            FROM "${table}" WHERE state = 'pending'`
        ).pipe(
          Effect.flatMap(({ rows: [row] }) =>
            Effect.zipRight(Metric.set(backlogGauge, row?.n ?? 0), Metric.set(lagGauge, Math.max(0, row?.ms ?? 0)))
          ),
          Effect.matchEffect({ onFailure: metrics.failed, onSuccess: () => metrics.ok }),
          Effect.zipRight(Effect.sleep(options.metricsInterval ?? "5 seconds")),
          Effect.forever,
          Effect.forkScoped
        )
        const [position] = (yield* query<{ lsn: string | null }>(
          control,
          "setup",
          `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`,
          [slot]
        )).rows
        const replication = yield* connect(true)
        const stream = yield* CdcStream.start(replication, {
          slot,
          publication,
          table,
          from: Pgoutput.parseLsn(position?.lsn ?? "0/0"),
          highWater: batchSize * 4,
          statusInterval
        }).pipe(Effect.mapError((cause) => new CdcError({ operation: "start replication", cause })))
        yield* supervisor.up
        // Deleting published rows and confirming their position run beside the next batches' publish, in
        // order. Batches that queued up meanwhile are deleted by one statement and confirmed once, so the
        // database round trip is paid per wait, not per batch; at most `confirmWindow` batches wait.
        const confirmWindow = 16
        const published = yield* Queue.bounded<{ readonly ids: ReadonlyArray<number>; readonly lsn: Pgoutput.Lsn }>(confirmWindow)
        const confirming = Effect.gen(function*() {
          while (true) {
            const batches = [...yield* Queue.takeBetween(published, 1, confirmWindow)]
            yield* settle(control, batches.length === 1 ? batches[0]!.ids : batches.flatMap((b) => b.ids))
            yield* stream.confirm(batches[batches.length - 1]!.lsn).pipe(Effect.mapError((cause) => new CdcError({ operation: "confirm", cause })))
            yield* supervisor.up
          }
        })
        const publishing = Effect.gen(function*() {
          while (true) {
            const transactions = yield* stream.take(batchSize).pipe(Effect.mapError((cause) => new CdcError({ operation: "stream", cause })))
            const rows = yield* decode(transactions.flatMap((t) => t.rows))
            const ids = rows.length > 0 ? yield* deliver(control, rows) : []
            yield* Queue.offer(published, { ids, lsn: transactions[transactions.length - 1]!.endLsn })
          }
        })
        return yield* Effect.zipRight(publishing, confirming, { concurrent: true })
      }))

    const run = Supervise.run({ name: `outbox-cdc:${name}`, backoffMax: "5 seconds" }, session)

    return { name, slot, publication, run }
  })

/** Runs a CDC relay until interrupted. */
export const run = (options: Options): Effect.Effect<never, InvalidRelayName | CdcError, Transport.Publisher> =>
  Effect.scoped(Effect.flatMap(make(options), (relay) => relay.run))

/** Runs a CDC relay in the background for the layer's lifetime (a fatal fault is logged; see {@link layerMonitored}). */
export const layer = (options: Options): Layer.Layer<never, InvalidRelayName, Transport.Publisher> =>
  Layer.scopedDiscard(Effect.flatMap(make(options), (relay) => Effect.forkScoped(relay.run)))

/**
 * {@link layer}, plus the polling relay's `Relay.RelayMonitor`: `Relay.guard(main)` ends the program with
 * `RelayFailed` when this relay gives up.
 */
export const layerMonitored = (options: Options): Layer.Layer<RelayMonitor, InvalidRelayName, Transport.Publisher> =>
  Layer.scoped(
    RelayMonitor,
    Effect.gen(function*() {
      const relay = yield* make(options)
      const fatal = yield* Deferred.make<never, RelayFailed>()
      yield* relay.run.pipe(
        Effect.onExit((exit) =>
          Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)
            ? Deferred.fail(fatal, new RelayFailed({ relayId: `cdc:${relay.name}`, cause: exit.cause }))
            : Effect.void
        ),
        Effect.forkScoped
      )
      return { relayId: `cdc:${relay.name}`, awaitFatal: Deferred.await(fatal) }
    })
  )

/**
 * Drops the relay's slot (when switching back to the polling relay, or retiring the relay): a slot nobody
 * reads makes the server keep WAL without limit. Answers whether there was one.
 */
export const dropSlot = (connection: string | pg.ClientConfig, name = "default"): Effect.Effect<boolean, CdcError> =>
  Effect.acquireUseRelease(
    Effect.tryPromise({
      try: async () => {
        const client = new pg.Client(typeof connection === "string" ? { connectionString: connection } : connection)
        client.on("error", () => undefined)
        await client.connect()
        return client
      },
      catch: (cause) => new CdcError({ operation: "connect", cause })
    }),
    (client) =>
      Effect.tryPromise({
        try: () =>
          client.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [`bulwark_cdc_${name}`]),
        catch: (cause) => new CdcError({ operation: "drop slot", cause })
      }).pipe(Effect.map((result) => (result.rowCount ?? 0) > 0)),
    (client) => Effect.promise(() => client.end().catch(() => undefined))
  )
