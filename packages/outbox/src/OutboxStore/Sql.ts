/**
 * The SQL outbox store (PGlite and PostgreSQL, any `@bulwark/sql` database): rows in one table, appended on
 * the caller's `sql.withTransaction` connection, claimed with `FOR UPDATE SKIP LOCKED` under a lease (or,
 * with `partitioned: true`, read from the partitions of keys the relay leases), and relays woken by
 * `LISTEN`/`NOTIFY` while they sleep (see `Outbox.Options.notify`).
 */
import { Failure } from "@bulwark/core"
import { Database, Migrations } from "@bulwark/sql"
import type { Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Context, Duration, Effect, Either, Layer, Option, Schema, Stream } from "effect"
import { constVoid, identity } from "effect/Function"
import * as tables from "../internal/tables.js"
import { affectedRows, prepared, type Prepared } from "../internal/prepared.js"
import { type Row, toClaimed } from "../internal/rows.js"
import { sqlWakeup } from "../internal/sqlWakeup.js"
import {
  type ClaimedRow,
  type DeadRow,
  ModeConflict,
  OutboxStore,
  OutboxStoreError,
  OutsideTransaction,
  type Service
} from "../OutboxStore.js"

/** Settings of the outbox tables. */
export interface Options {
  /** The outbox table. Default `bulwark_outbox`. */
  readonly table?: string
  /**
   * How `append` wakes relays. Default `true`: it sends `NOTIFY` in the caller's transaction only while some
   * relay is asleep, waiting for one; a busy relay claims again by itself, so under load appends send none.
   * `"always"`: every appending transaction notifies. `false`: none does; relays poll (`Relay` `pollInterval`).
   * Postgres serialises the commits of notifying transactions (a database-wide lock), so notifications
   * cap the commit rate of busy appenders; that is what the default avoids.
   */
  readonly notify?: boolean | "always"
  /**
   * Per-key order under concurrent appenders: a keyed row is claimed only once every transaction that
   * began before it was appended and writes to the outbox has ended (one of them could still commit an
   * older row of the same key), or once the row's transaction began this long ago, whichever comes first.
   * An appending transaction open longer than this may see a newer row of its key published first; one
   * that never touches the outbox delays nothing. Appenders connected as another role count only if the
   * relay's role may read their `pg_stat_activity.xact_start` (`pg_read_all_stats`). Default 5 s.
   */
  readonly commitOrderWindow?: Duration.DurationInput
  /**
   * How relays share the rows. Default `false`: each claim leases rows one by one (a lease written on each
   * row, and a per-key check that the row is its key's oldest pending one). `true`: keys are hashed to a fixed
   * set of partitions (32), and each partition is leased by one relay at a time, as a Kafka consumer group
   * leases partitions; the relay holding a partition is its only reader, so it reads the partition's pending
   * rows in id order with no row lease and no per-key SQL check (it keeps a key behind a row that is waiting
   * for a retry or for the commit-order window itself) and writes each row once, when it settles it. Relays
   * balance the partitions among themselves (each holds about its share; one holding more than its share
   * hands the excess back between rounds) and take over a stopped relay's partitions when their lease
   * expires. All relays of one table must use the same setting: while partitions are leased, a row-leasing
   * relay claims nothing (its claim fails with `ModeConflict` as the cause), and a partitioned relay skips rows
   * under a row lease.
   */
  readonly partitioned?: boolean
}

/** The default outbox table. */
export const defaultTable = "bulwark_outbox"

/** The SQL store, with the names of its tables and channels. */
export interface SqlOutboxStore extends Service {
  readonly table: string
  /** The NOTIFY channel `append` signals on commit (the relay listens on it). */
  readonly channel: string
  /** The NOTIFY channel the relay signals after it settles rows (`drained` listens on it). */
  readonly settledChannel: string
  /** How `append` wakes relays (see {@link Options.notify}). */
  readonly notify: boolean | "always"
  /** The table where sleeping relays register, so that appends wake them. */
  readonly sleepersTable: string
}

/** Row ids (integers) as a PostgreSQL array literal, for a `$n::bigint[]` parameter. */
const idArray = (ids: ReadonlyArray<number>): string => `{${ids.join(",")}}`
const toBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
const encodeRecord = Schema.encodeSync(Schema.parseJson(Failure.FailureRecord))
const decodeRecord = Schema.decodeUnknownEither(Schema.parseJson(Failure.FailureRecord))
const unreadableRecord = (detail: string) =>
  new Failure.FailureRecord({ tag: "Unknown", message: detail, classification: "permanent", category: "unknown" })

/** Creates the outbox tables (migrations) and the store over the database in context. */
export const make = (
  options: Options = {}
): Effect.Effect<SqlOutboxStore, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient | Database.Database> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const db = yield* Database.Database
    const table = yield* Migrations.tableName(options.table ?? defaultTable)
    yield* Migrations.run(`outbox:${table}`, tables.outboxMigrations(table))
    const channel = table
    const notify = options.notify ?? true
    const commitOrderWindowMillis = Duration.toMillis(Duration.decode(options.commitOrderWindow ?? "5 seconds"))
    const sleepersTable = tables.sleepersTable(table)
    const settledChannel = `${table}_settled`
    const wakePayload = "appended"
    const failed = (operation: string) => (cause: SqlError) => new OutboxStoreError({ operation, cause })
    const named = db.engine === "postgres"
    // node-postgres decodes every bytea value into a fresh buffer, which the claimed row may keep as it is;
    // PGlite's values are copied, as nothing promises they are not views of a buffer it reuses.
    const owned = db.engine === "postgres"
    // The relay's statements run straight on a driver connection (the caller's transaction's, if any), as the
    // append does: no statement builder and no span per statement, which cost more Node CPU than the rest of
    // a small round.
    const runPrepared = (statement: Prepared, params: ReadonlyArray<unknown>) =>
      Effect.flatMap(
        Effect.serviceOption(SqlClient.TransactionConnection),
        (tx) =>
          Option.isSome(tx)
            ? statement.run(tx.value[0], params)
            : Effect.scoped(Effect.flatMap(sql.reserve, (connection) => statement.run(connection, params)))
      )

    // The append runs once per business transaction, so it skips the statement builder: the text for each
    // row count is built once and run on the caller's transaction connection directly. The insert and the
    // NOTIFY are one statement (one round trip); the notification leaves at the caller's commit. Its payload
    // is the same for every append, so however many appends and topics a transaction holds, Postgres folds
    // them into one notification at commit: relays only need to know that rows arrived. By default it is
    // sent only while a relay sleeps: notifying commits are serialised, and a busy relay needs no wake-up.
    // Statements of up to `preparedRows` rows are prepared per connection on PostgreSQL; larger ones, rarer
    // and of many sizes, are planned each time rather than kept prepared on every connection.
    const preparedRows = 16
    const insertTexts = new Map<number, Prepared>()
    const insertText = (rows: number) => {
      let statement = insertTexts.get(rows)
      if (statement === undefined) {
        const first = notify ? 3 : 1
        const values = Array.from({ length: rows }, (_, r) => {
          const p = first + r * 5
          return `($${p}, $${p + 1}, $${p + 2}, $${p + 3}, $${p + 4})`
        }).join(", ")
        const insert = `INSERT INTO "${table}" (topic, message_id, key, payload, headers) VALUES ${values}`
        const wakeAll = `WITH inserted AS (${insert} RETURNING id) SELECT pg_notify($1, $2)`
        const text = notify === "always"
          ? wakeAll
          : notify
          ? `${wakeAll} WHERE EXISTS (SELECT 1 FROM "${sleepersTable}")`
          : insert
        statement = prepared("append", text, named && rows <= preparedRows)
        insertTexts.set(rows, statement)
      }
      return statement
    }
    const maxRowsPerStatement = 1000
    const appendFailed = failed("append")

    // One event per business transaction is the common case: the transaction is read off the fiber and the
    // statement's outcome mapped in one step each, as every step here is paid once per append.
    const appendMessages = (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) =>
      Effect.withFiberRuntime((fiber): Effect.Effect<void, OutsideTransaction | OutboxStoreError> => {
        const tx = Context.getOption(fiber.currentContext, SqlClient.TransactionConnection)
        if (Option.isNone(tx)) return Effect.fail(new OutsideTransaction({ topic, count: messages.length }))
        if (messages.length === 0) return Effect.void
        const connection = tx.value[0]
        const statements: Array<Effect.Effect<unknown, SqlError>> = []
        for (let start = 0; start < messages.length; start += maxRowsPerStatement) {
          const end = Math.min(messages.length, start + maxRowsPerStatement)
          const params: Array<unknown> = notify ? [channel, wakePayload] : []
          for (let i = start; i < end; i++) {
            const m = messages[i]!
            params.push(topic, m.id, m.key, toBuffer(m.payload), JSON.stringify(m.headers))
          }
          statements.push(insertText(end - start).run(connection, params))
        }
        const all = statements.length === 1 ? statements[0]! : Effect.forEach(statements, identity, { discard: true })
        return Effect.mapBoth(all, { onFailure: appendFailed, onSuccess: constVoid })
      })

    const backlog = Effect.map(
      sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)} WHERE state = 'pending'`,
      (rows) => rows[0]?.n ?? 0
    ).pipe(Effect.mapError(failed("backlog")))

    const lag = Effect.map(
      sql<{ ms: number | null }>`SELECT (extract(epoch FROM now() - min(created_at)) * 1000)::float8 AS ms
        FROM ${sql(table)} WHERE state = 'pending'`,
      (rows) => Duration.millis(Math.max(0, rows[0]?.ms ?? 0))
    ).pipe(Effect.mapError(failed("lag")))

    const pendingUpTo = (maxId: number) =>
      Effect.map(
        sql`SELECT 1 FROM ${sql(table)} WHERE state = 'pending' AND id <= ${maxId} LIMIT 1`,
        (rows) => rows.length > 0
      )

    // Listens before reading the high-water mark, so a settlement between the two is not missed; polls as a fallback.
    const drained = Effect.scoped(Effect.gen(function*() {
      const settled = yield* Stream.toPull(db.listen(settledChannel))
      const [high] = yield* sql<{ id: number | null }>`SELECT max(id)::int8 AS id FROM ${sql(table)}`
      const maxId = high?.id ?? 0
      while (yield* pendingUpTo(maxId)) {
        yield* settled.pipe(Effect.timeout("100 millis"), Effect.ignore)
      }
    })).pipe(Effect.mapError(failed("drained")))

    const deadLetters = (limit = 100, topic?: string) =>
      Effect.map(
        sql<{
          id: number
          topic: string
          message_id: string
          key: string
          attempts: number
          last_error: string | null
          dead_letter_published: boolean | null
        }>`SELECT id, topic, message_id, key, attempts, last_error, dead_letter_published
          FROM ${sql(table)} WHERE state = 'dead' ${topic === undefined ? sql`` : sql`AND topic = ${topic}`}
          ORDER BY id LIMIT ${limit}`,
        (rows) =>
          rows.map((row): DeadRow => ({
            id: Number(row.id),
            topic: row.topic,
            messageId: row.message_id,
            key: row.key,
            attempts: row.attempts,
            error: row.last_error === null
              ? unreadableRecord("no error recorded")
              // A record this version cannot read is still a dead row: list it, saying so.
              : Either.getOrElse(decodeRecord(row.last_error), () => unreadableRecord(`unreadable error record: ${row.last_error}`)),
            deadLetterPublished: row.dead_letter_published === true
          }))
      ).pipe(Effect.mapError(failed("deadLetters")))

    // The NOTIFY wakes sleeping relays, as an append does; the rows are claimable at once.
    const requeueDead: Service["requeueDead"] = (selection = {}) =>
      Effect.map(
        sql<{ n: number }>`
          WITH requeued AS (
            UPDATE ${sql(table)} SET state = 'pending', attempts = 0, available_at = now(),
              dead_letter_published = NULL, claimed_by = NULL, claimed_until = NULL
            WHERE state = 'dead' AND ${
          selection.ids !== undefined
            ? (selection.ids.length === 0 ? sql`FALSE` : sql.in("id", selection.ids))
            : selection.topic !== undefined
            ? sql`topic = ${selection.topic}`
            : sql`TRUE`
        }
            RETURNING id)
          SELECT count(*)::int AS n, pg_notify(${channel}, ${wakePayload}) FROM requeued`,
        (rows) => Number(rows[0]?.n ?? 0)
      ).pipe(Effect.mapError(failed("requeueDead")))

    // The relay's own bookkeeping commits asynchronously (`synchronous_commit = off` for that statement only):
    // a server crash may forget the last claims or marks, which costs a lease wait or a duplicate publish,
    // never a row, while the appends themselves stay durable. Both statements run once per round, so their
    // text is built once (the table name is a checked identifier) and only the parameters change.
    //
    // The candidates are an `ARRAY(…)` rather than an `IN (…)` subquery: PostgreSQL plans `id IN (SELECT
    // … LIMIT n)` at large n as a hash semi-join over a scan of the whole table. They are the rows' physical
    // addresses (`ctid`), so the UPDATE visits them directly (a TID scan) instead of probing the primary key
    // once per row; the inner select has locked them, so they cannot move meanwhile. (Had a candidate been
    // updated by another transaction after the statement's snapshot, PostgreSQL re-checks the newest version
    // against the `ctid` list and skips it: a row is then claimed a round later, never twice.) A keyed row is claimable only once no transaction that began before it was
    // appended still writes to the outbox (one could yet commit an older row of its key), or after
    // `commitOrderWindow` at the latest.
    //
    // The head check's lower bound (`p.id >=` the lowest pending id) holds for every pending row, so it
    // changes no answer; it bounds the probe of a key's index range from below. Without it each probe walks
    // the index entries of the key's rows deleted since the last vacuum, each one a heap visit: 28 buffers
    // per candidate halfway through a 50,000-row backlog instead of 3, most of the claim's cost at batch 1000.
    // The claim changes no indexed column, so on the outbox's half-empty pages (migration 4) it is a HOT update.

    // When the oldest running transaction that writes to the outbox (it holds the table's RowExclusiveLock)
    // began, other than this one: any transaction that could still commit a row with a lower id is among
    // them. Read once per claim, and only when a candidate row has a key.
    const oldestWriter = `SELECT min(a.xact_start) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'relation' AND l.relation = '"${table}"'::regclass AND l.mode = 'RowExclusiveLock'
        AND l.pid <> pg_backend_pid()`
    // A row-leasing relay claims nothing while a partitioned relay holds a partition lease on the table (the
    // modes do not see each other's leases; see `ModeConflict`): one uncorrelated test, run once per claim.
    const partitionLeased = `SELECT 1 FROM "${tables.partitionsTable(table)}" o WHERE o.owner IS NOT NULL AND o.lease_until > now()`
    const claimText = (limit: number) => `
      WITH claimed AS (
      UPDATE "${table}" SET claimed_by = $1, claimed_until = now() + ($2::float8 * interval '1 millisecond')
      WHERE ctid = ANY(ARRAY(
        SELECT c.ctid FROM "${table}" c
        WHERE c.state = 'pending' AND c.available_at <= now()
          AND NOT EXISTS (${partitionLeased})
          AND (c.claimed_until IS NULL OR c.claimed_until < now())
          AND (c.key = '' OR (
            (c.appended_at IS NULL OR c.appended_at < coalesce((${oldestWriter}), 'infinity')
              OR c.created_at < now() - ($3::float8 * interval '1 millisecond'))
            AND NOT EXISTS (
              SELECT 1 FROM "${table}" p WHERE p.state = 'pending' AND p.key = c.key AND p.id < c.id
                AND p.id >= (SELECT min(m.id) FROM "${table}" m WHERE m.state = 'pending'))))
        ORDER BY c.id
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED))
      RETURNING id, topic, message_id, key, payload, headers, attempts)
      SELECT claimed.*, set_config('synchronous_commit', 'off', true) AS async_commit FROM claimed`
    // A relay claims the same batch size every round: one prepared statement per size, the limit written
    // into its text so that the cached plan is the one planned for that size (a generic plan would guess it).
    const perLimit = (name: string, text: (limit: number) => string) => {
      const statements = new Map<number, Prepared>()
      return (limit: number) => {
        let statement = statements.get(limit)
        if (statement === undefined) {
          statement = prepared(name, text(Math.max(1, Math.floor(limit))), named)
          statements.set(limit, statement)
        }
        return statement
      }
    }
    const claimStatement = perLimit("claim", claimText)
    const claimFailed = failed("claim")
    // Asked only when a claim took nothing (an idle relay's poll, or the claim's own mode test), so a busy
    // relay pays nothing for it.
    const leasedPartitions = prepared("leased", `SELECT count(*)::int AS n FROM (${partitionLeased}) l`, named)
    const nothingClaimed = runPrepared(leasedPartitions, []).pipe(
      Effect.mapError(claimFailed),
      Effect.flatMap((result) => {
        const n = Number(result.rows[0]?.n ?? 0)
        return n > 0
          ? Effect.fail(new OutboxStoreError({ operation: "claim", cause: new ModeConflict({ table, leasedPartitions: n }) }))
          : Effect.succeed<ReadonlyArray<ClaimedRow>>([])
      })
    )
    const claimByRow: Service["claim"] = ({ leaseMillis, limit, relayId }) =>
      Effect.flatMap(
        Effect.mapError(runPrepared(claimStatement(limit), [relayId, leaseMillis, commitOrderWindowMillis]), claimFailed),
        (result) =>
          result.rows.length === 0
            ? nothingClaimed
            : Effect.succeed((result.rows as ReadonlyArray<Row>).map((row) => toClaimed(row, owned)).sort((a, b) => a.id - b.id))
      )

    // One statement: settle the rows this relay still holds, and tell `drained` waiters. A published row is
    // deleted unless the relay keeps it for its retention: one write per row instead of two, and no
    // published rows for the claim's index scans to step over. The ids travel as one array parameter, so
    // the statement text is the same for any batch size instead of one placeholder per row.
    //
    // The count is the command's own (`DELETE n`), not a `RETURNING` list counted by an outer query: with
    // `RETURNING` PostgreSQL fetches every deleted row again to project it, and the CTE keeps the list in a
    // tuple store: about a fifth of the settle's server time at a thousand rows. The asynchronous commit and
    // the notification are one uncorrelated subquery, which PostgreSQL runs once, before the first row is
    // written (a one-time filter that is always true), whatever the number of rows.
    const settledText = (settle: string) => `${settle}
        AND (SELECT set_config('synchronous_commit', 'off', true) IS NOT NULL AND pg_notify($3, 'settled') IS NOT NULL)`
    const deleteText = prepared("settle", settledText(`DELETE FROM "${table}" WHERE id = ANY($1::bigint[]) AND claimed_by = $2`), named)
    const keepText = prepared("keep", settledText(`
        UPDATE "${table}" SET state = 'published', published_at = now(), attempts = attempts + 1,
          claimed_by = NULL, claimed_until = NULL
        WHERE id = ANY($1::bigint[]) AND claimed_by = $2`), named)
    const markFailed = failed("markPublished")
    // Settles with one of the two statements (delete, or keep for the retention); both modes share it. The ids
    // travel as one array literal built by a join: the driver would quote and escape each element of a JS
    // array with two regular expressions, a visible share of the relay's CPU at a thousand rows per batch.
    // `more` adds the mode's own parameters after the first three.
    const settleWith = (
      remove: Prepared,
      keepRow: Prepared,
      more?: (relayId: string, ids: ReadonlyArray<number>) => ReadonlyArray<unknown>
    ): Service["markPublished"] =>
    (relayId, ids, keep = false) =>
      ids.length === 0 ? Effect.succeed(0) : Effect.map(
        runPrepared(
          keep ? keepRow : remove,
          more === undefined
            ? [idArray(ids), relayId, settledChannel]
            : [idArray(ids), relayId, settledChannel, ...more(relayId, ids)]
        ),
        affectedRows
      ).pipe(Effect.mapError(markFailed))
    const markPublishedByRow = settleWith(deleteText, keepText)

    const rescheduleByRow: Service["reschedule"] = (relayId, id, retry) =>
      Effect.map(
        sql`UPDATE ${sql(table)} SET attempts = ${retry.attempts}, last_error = ${encodeRecord(retry.error)},
            available_at = now() + (${retry.delayMillis}::float8 * interval '1 millisecond'), claimed_by = NULL, claimed_until = NULL
          WHERE id = ${id} AND claimed_by = ${relayId} RETURNING id`,
        (rows) => rows.length > 0
      ).pipe(Effect.mapError(failed("reschedule")))

    const markDeadByRow: Service["markDead"] = (relayId, id, dead) =>
      Effect.map(
        sql<{ n: number }>`
          WITH marked AS (
            UPDATE ${sql(table)} SET state = 'dead', attempts = ${dead.attempts}, last_error = ${encodeRecord(dead.error)},
              dead_letter_published = ${dead.deadLetterPublished}, claimed_by = NULL, claimed_until = NULL
            WHERE id = ${id} AND claimed_by = ${relayId}
            RETURNING id)
          SELECT count(*)::int AS n, pg_notify(${settledChannel}, count(*)::text) FROM marked`,
        (rows) => (rows[0]?.n ?? 0) > 0
      ).pipe(Effect.mapError(failed("markDead")))

    const renewText = `
      WITH renewed AS (
        UPDATE "${table}" SET claimed_until = now() + ($3::float8 * interval '1 millisecond')
        WHERE id = ANY($1::bigint[]) AND claimed_by = $2 AND state = 'pending'
        RETURNING id)
      SELECT array_agg(id) AS ids, set_config('synchronous_commit', 'off', true) FROM renewed`
    const renewByRow: Service["renew"] = (relayId, ids, leaseMillis) =>
      ids.length === 0 ? Effect.succeed([]) : Effect.map(
        sql.unsafe<{ ids: ReadonlyArray<number | string> | null }>(renewText, [ids, relayId, leaseMillis]),
        (rows) => (rows[0]?.ids ?? []).map(Number)
      ).pipe(Effect.mapError(failed("renew")))

    // ---------------------------------------------------------------- partitioned (`partitioned: true`)
    //
    // A relay leases whole partitions (rows of `partitionsTable`, each with an owner and a lease end) instead
    // of rows. Its claim is one statement: it renews the leases of the partitions it owns (a handful of small
    // rows, updated in place) and reads, in id order, the pending rows of exactly those partitions, with no row
    // lock and no write to the rows. It is their only reader, so nothing else can publish them meanwhile; the
    // only write to a row is the one that settles it. Every settling statement checks that the relay still
    // owns the row's partition, so a relay whose partition was taken over changes nothing of it.
    //
    // Per-key order: a key's rows are all in one partition, read oldest first, and the relay publishes a
    // key's rows in waves, one row of a key per wave, a wave only after the previous one is settled; a key
    // whose row failed publishes nothing more that round. Between rounds, a row waiting for a retry keeps its
    // key's later rows out of the claim (`retrying`: pending rows with attempts, found through a partial index
    // that is empty while nothing fails). A keyed row not yet past the commit-order check (an older row of its
    // key could still commit) is returned flagged, and the store drops it and every later row of its key.
    //
    // Balancing, every `balanceEvery` per relay (and whenever it holds no partition): the relay refreshes its
    // registration, counts the live relays, hands back the partitions beyond its share (only between rounds:
    // the claim is where it runs, and a round's rows are settled before the next claim) and takes free or
    // expired ones up to its share. Takeover is the lease's expiry: a relay renews its partitions at every
    // claim and, while a batch is being published, at every heartbeat; one that stops for a lease period loses
    // them to the next relay that balances. Two relays never both hold a partition: taking one re-checks, under
    // the row lock, that its lease has expired, and renewing one re-checks its owner.
    const partitionsTable = tables.partitionsTable(table)
    const relaysTable = tables.relaysTable(table)
    const partitionOf = tables.partitionOf
    const ownedBy = (r: string, relayParam: string) =>
      `${partitionOf(r)} = ANY(ARRAY(SELECT o.partition FROM "${partitionsTable}" o WHERE o.owner = ${relayParam}))`
    const balanceEvery = 100
    const balancedAt = new Map<string, { at: number; held: number }>()
    // The ids (ascending) of each relay's last claim, if no balance ran since (see `fromLastClaim`).
    const claimedAfterBalance = new Map<string, ReadonlyArray<number>>()
    // The registration, the count of live relays and the relay's own partitions are one statement: balancing
    // runs every `balanceEvery` ms, several times a second under load, and a relay holding its share (the
    // usual case) needs nothing more, where a transaction of three statements cost five round trips. The
    // upsert is a data-modifying CTE, which runs whether or not the query reads it; the query's snapshot does
    // not see it, so the relay counts itself (it has just registered) and the others still registered.
    // Nothing here needs one transaction: handing back and taking re-check ownership and expiry in their own
    // statements, under the row lock, and a count a moment stale only delays the balance by one period.
    const balanceCheck = prepared(
      "balance",
      `WITH seen AS (
        INSERT INTO "${relaysTable}" (relay_id, seen_until)
        VALUES ($1, now() + ($2::float8 * interval '1 millisecond'))
        ON CONFLICT (relay_id) DO UPDATE SET seen_until = EXCLUDED.seen_until
        RETURNING relay_id)
      SELECT 1 + (SELECT count(*)::int FROM "${relaysTable}" WHERE seen_until > now() AND relay_id <> $1) AS live,
        ARRAY(SELECT p.partition FROM "${partitionsTable}" p WHERE p.owner = $1 ORDER BY p.partition) AS mine`,
      named
    )
    const balance = (relayId: string, leaseMillis: number) =>
      Effect.gen(function*() {
        const result = yield* runPrepared(balanceCheck, [relayId, leaseMillis])
        const row = result.rows[0] as { readonly live: number; readonly mine: ReadonlyArray<number> | null } | undefined
        const share = Math.ceil(tables.partitionCount / Math.max(1, row?.live ?? 1))
        const mine = row?.mine ?? []
        if (mine.length > share) {
          const excess = mine.slice(share)
          yield* sql`UPDATE ${sql(partitionsTable)} SET owner = NULL, lease_until = NULL
            WHERE owner = ${relayId} AND ${sql.in("partition", excess)}`
          return share
        }
        if (mine.length === share) return share
        // Free or expired partitions; the outer condition re-checks the expiry on the locked row, so a lease
        // renewed meanwhile is not taken.
        const taken = yield* sql<{ partition: number }>`UPDATE ${sql(partitionsTable)}
          SET owner = ${relayId}, lease_until = now() + (${leaseMillis}::float8 * interval '1 millisecond')
          WHERE partition IN (
            SELECT partition FROM ${sql(partitionsTable)}
            WHERE (owner IS NULL OR lease_until < now()) AND owner IS DISTINCT FROM ${relayId}
            ORDER BY partition LIMIT ${share - mine.length} FOR UPDATE SKIP LOCKED)
            AND (owner IS NULL OR lease_until < now())
          RETURNING partition`
        return mine.length + taken.length
      })
    // A relay that holds every partition (the only one running) reads every row: it skips the partition
    // expression (a hash of the key, a search of the held list) on each row, about a fifth of the claim's server
    // time at a thousand rows.
    const partitionedText = (limit: number) => `
      WITH held AS (
        UPDATE "${partitionsTable}" SET lease_until = now() + ($2::float8 * interval '1 millisecond')
        WHERE owner = $1
        RETURNING partition, set_config('synchronous_commit', 'off', true) AS async_commit)
      SELECT c.id, c.topic, c.message_id, c.key, c.payload, c.headers, c.attempts,
        ((c.claimed_until IS NULL OR c.claimed_until < now())
          AND (c.key = '' OR c.appended_at IS NULL OR c.appended_at < coalesce((${oldestWriter}), 'infinity')
            OR c.created_at < now() - ($3::float8 * interval '1 millisecond'))) AS ready
      FROM "${table}" c
      WHERE c.state = 'pending' AND c.available_at <= now()
        AND ((SELECT count(*) FROM held) = ${tables.partitionCount} OR ${partitionOf("c")} = ANY(ARRAY(SELECT partition FROM held)))
        AND c.key NOT IN (
          SELECT r.key FROM "${table}" r
          WHERE r.state = 'pending' AND r.attempts > 0 AND r.available_at > now() AND r.key <> '')
      ORDER BY c.id
      LIMIT ${limit}`
    const partitionedStatement = perLimit("pclaim", partitionedText)
    const claimPartitioned: Service["claim"] = ({ leaseMillis, limit, relayId }) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const last = balancedAt.get(relayId)
        if (last === undefined || last.held === 0 || now - last.at >= balanceEvery) {
          // A claim from before this balance no longer qualifies for the settle's cheap ownership check.
          claimedAfterBalance.delete(relayId)
          const held = yield* balance(relayId, leaseMillis)
          balancedAt.set(relayId, { at: now, held })
        }
        const result = yield* runPrepared(partitionedStatement(limit), [relayId, leaseMillis, commitOrderWindowMillis])
        // A keyed row not yet past the commit-order check holds back its key's later rows.
        const held = new Set<string>()
        const claimed: Array<ClaimedRow> = []
        const ids: Array<number> = []
        for (const row of result.rows as ReadonlyArray<Row & { readonly ready: boolean }>) {
          if (!row.ready || (row.key !== "" && held.size > 0 && held.has(row.key))) {
            if (row.key !== "") held.add(row.key)
            continue
          }
          const one = toClaimed(row, owned)
          claimed.push(one)
          ids.push(one.id)
        }
        claimedAfterBalance.set(relayId, ids)
        return claimed
      }).pipe(Effect.mapError(claimFailed))

    // The settle's ownership check, cheap in the usual case: a relay gains partitions only in its own
    // `balance`, which runs before its claim, so from that balance to the settle its set of partitions can only
    // shrink (others take those whose lease expired). If it still holds as many as that balance left it with,
    // it holds every one it held at the claim, so the partition of every row that claim answered: one count of
    // the partitions table instead of the partition expression (a hash of the key, a search of the held list)
    // for each row. That holds only for rows of its last claim since that balance, which the store checks
    // (ids ascending, as the relay passes them, within the claim's ascending ids: one merge, no hashing). For
    // any other ids, or once it holds fewer partitions, the check is made row by row, as before; -1 never
    // matches a count.
    const fromLastClaim = (relayId: string, ids: ReadonlyArray<number>): boolean => {
      const claimed = claimedAfterBalance.get(relayId)
      if (claimed === undefined) return false
      let j = 0
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i]!
        while (j < claimed.length && claimed[j]! < id) j++
        if (j === claimed.length || claimed[j] !== id) return false
        j++
      }
      return true
    }
    const partitionedOwned = `((SELECT count(*)::int FROM "${partitionsTable}" o WHERE o.owner = $2) = $4::int
          OR ${ownedBy("r", "$2")})`
    const partitionedDelete = prepared("psettle", settledText(`DELETE FROM "${table}" r
      WHERE r.id = ANY($1::bigint[]) AND r.state = 'pending' AND ${partitionedOwned}`), named)
    const partitionedKeep = prepared("pkeep", settledText(`
        UPDATE "${table}" r SET state = 'published', published_at = now(), attempts = attempts + 1
        WHERE r.id = ANY($1::bigint[]) AND r.state = 'pending' AND ${partitionedOwned}`), named)
    const markPublishedPartitioned = settleWith(
      partitionedDelete,
      partitionedKeep,
      (relayId, ids) => [fromLastClaim(relayId, ids) ? balancedAt.get(relayId)?.held ?? -1 : -1]
    )

    const reschedulePartitioned: Service["reschedule"] = (relayId, id, retry) =>
      Effect.map(
        sql.unsafe(
          `UPDATE "${table}" r SET attempts = $3, last_error = $4,
            available_at = now() + ($5::float8 * interval '1 millisecond')
          WHERE r.id = $1 AND r.state = 'pending' AND ${ownedBy("r", "$2")} RETURNING r.id`,
          [id, relayId, retry.attempts, encodeRecord(retry.error), retry.delayMillis]
        ),
        (rows) => rows.length > 0
      ).pipe(Effect.mapError(failed("reschedule")))

    const markDeadPartitioned: Service["markDead"] = (relayId, id, dead) =>
      Effect.map(
        sql.unsafe<{ n: number }>(
          `WITH marked AS (
            UPDATE "${table}" r SET state = 'dead', attempts = $3, last_error = $4, dead_letter_published = $5
            WHERE r.id = $1 AND r.state = 'pending' AND ${ownedBy("r", "$2")}
            RETURNING r.id)
          SELECT count(*)::int AS n, pg_notify($6, count(*)::text) FROM marked`,
          [id, relayId, dead.attempts, encodeRecord(dead.error), dead.deadLetterPublished, settledChannel]
        ),
        (rows) => (rows[0]?.n ?? 0) > 0
      ).pipe(Effect.mapError(failed("markDead")))

    // The heartbeat renews the relay's partitions and answers the rows among `ids` still in one of them.
    const renewPartitionedText = `
      WITH held AS (
        UPDATE "${partitionsTable}" SET lease_until = now() + ($3::float8 * interval '1 millisecond')
        WHERE owner = $2
        RETURNING partition, set_config('synchronous_commit', 'off', true) AS async_commit)
      SELECT array_agg(r.id) AS ids FROM "${table}" r
      WHERE r.id = ANY($1::bigint[]) AND r.state = 'pending'
        AND ${partitionOf("r")} = ANY(ARRAY(SELECT partition FROM held))`
    const renewPartitioned: Service["renew"] = (relayId, ids, leaseMillis) =>
      ids.length === 0 ? Effect.succeed([]) : Effect.map(
        sql.unsafe<{ ids: ReadonlyArray<number | string> | null }>(renewPartitionedText, [ids, relayId, leaseMillis]),
        (rows) => (rows[0]?.ids ?? []).map(Number)
      ).pipe(Effect.mapError(failed("renew")))

    // A stopped relay's hand-back: its rows (or partitions and registration) become claimable at once, and the
    // NOTIFY wakes relays asleep on the channel (sleeping, they would otherwise wait out their poll interval).
    const releaseByRow = (relayId: string) =>
      sql`WITH released AS (
          UPDATE ${sql(table)} SET claimed_by = NULL, claimed_until = NULL
          WHERE claimed_by = ${relayId} AND state = 'pending'
          RETURNING id)
        SELECT pg_notify(${channel}, ${wakePayload}) FROM released LIMIT 1`
    const releasePartitioned = (relayId: string) =>
      sql.withTransaction(Effect.zipRight(
        sql`DELETE FROM ${sql(relaysTable)} WHERE relay_id = ${relayId}`,
        sql`WITH released AS (
            UPDATE ${sql(partitionsTable)} SET owner = NULL, lease_until = NULL
            WHERE owner = ${relayId}
            RETURNING partition)
          SELECT pg_notify(${channel}, ${wakePayload}) FROM released LIMIT 1`
      ))

    const partitioned = options.partitioned === true
    const release: Service["release"] = (relayId) =>
      Effect.asVoid(partitioned ? releasePartitioned(relayId) : releaseByRow(relayId)).pipe(
        Effect.zipRight(Effect.sync(() => {
          balancedAt.delete(relayId)
          claimedAfterBalance.delete(relayId)
        })),
        Effect.mapError(failed("release"))
      )
    const claim = partitioned ? claimPartitioned : claimByRow
    const markPublished = partitioned ? markPublishedPartitioned : markPublishedByRow
    const reschedule = partitioned ? reschedulePartitioned : rescheduleByRow
    const markDead = partitioned ? markDeadPartitioned : markDeadByRow
    const renew = partitioned ? renewPartitioned : renewByRow

    // A sleeper entry older than five minutes belongs to a relay that died asleep (a live one refreshes its
    // entry every 30 s), and would make every append notify for nothing; likewise a relay registration.
    const cleanup: Service["cleanup"] = (retentionMillis) =>
      Effect.zipLeft(
        Effect.map(
          sql`DELETE FROM ${sql(table)} WHERE state = 'published'
            AND published_at < now() - (${retentionMillis}::float8 * interval '1 millisecond') RETURNING id`,
          (rows) => rows.length
        ),
        Effect.zip(
          sql`DELETE FROM ${sql(sleepersTable)} WHERE since < now() - interval '5 minutes'`,
          sql`DELETE FROM ${sql(relaysTable)} WHERE seen_until < now() - interval '5 minutes'`
        )
      ).pipe(Effect.mapError(failed("cleanup")))

    // Whether a transaction that began before `before` (default: now) still holds the outbox's write lock (an
    // append not yet committed), and the statement's time; see `sqlWakeup`.
    // The claim's own `oldestWriter`: busy when the oldest of them began before the bound.
    const appendsInFlightText = `SELECT now()::text AS at,
        coalesce((${oldestWriter}) < coalesce($1::timestamptz, now()), false) AS busy`
    const appendsInFlight = (before: string | undefined) =>
      Effect.map(
        sql.unsafe<{ at: string; busy: boolean }>(appendsInFlightText, [before ?? null]),
        // One row, always; none would leave the relay unsure, looking again soon.
        (rows) => rows[0] ?? { at: undefined, busy: true }
      )

    const wakeup: Service["wakeup"] = (relayId, pollInterval) =>
      sqlWakeup({ sql, db, channel, sleepersTable, registers: notify === true, relayId, pollInterval, appendsInFlight })

    return {
      name: table,
      table,
      channel,
      settledChannel,
      notify,
      sleepersTable,
      appendMessages,
      backlog,
      lag,
      drained,
      deadLetters,
      requeueDead,
      claim,
      markPublished,
      reschedule,
      markDead,
      renew,
      cleanup,
      wakeup,
      release
    }
  })

/** Provides the store over the database in context (as the port), creating its tables. */
export const layer = (
  options: Options = {}
): Layer.Layer<OutboxStore, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient | Database.Database> =>
  Layer.effect(OutboxStore, make(options))

/**
 * Drops an outbox's tables and forgets their migrations, for tests and throw-away runs; a later `make` over
 * the same name starts afresh.
 */
export const drop = (table: string = defaultTable): Effect.Effect<void, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const checked = yield* Migrations.tableName(table)
    yield* sql`DROP TABLE IF EXISTS ${sql(checked)}`
    yield* sql`DROP TABLE IF EXISTS ${sql(tables.sleepersTable(checked))}`
    yield* sql`DROP TABLE IF EXISTS ${sql(tables.partitionsTable(checked))}`
    yield* sql`DROP TABLE IF EXISTS ${sql(tables.relaysTable(checked))}`
    yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`outbox:${checked}`}`
  })
