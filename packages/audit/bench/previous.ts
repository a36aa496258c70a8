/**
 * The SQL audit log's write path as it was before it was made cheaper, kept for the benchmark only, so that
 * the same run measures both: entries in an Effect `Queue` with a wake-up per write, every entry's `detail`
 * copied by the redaction, and each batch inserted as one `VALUES` list with 14 placeholders per row inside
 * `BEGIN` / `SET LOCAL synchronous_commit = off` / `COMMIT`. It writes into a table made by the current
 * driver (same columns, partitions and indexes); it only writes and flushes.
 */
import { AuditLog as Port, Redaction } from "@bulwark/core"
import * as SqlClient from "@effect/sql/SqlClient"
import { Duration, Effect, Layer, Metric, Queue, Schedule } from "effect"
import type { Options } from "../src/AuditLog.js"
import * as SqlAuditLog from "../src/AuditLog/Sql.js"

const writtenTotal = Metric.counter("bench_audit_previous_written_total", { incremental: true })
const droppedTotal = Metric.counter("bench_audit_previous_dropped_total", { incremental: true })
const dayMillis = 86_400_000
const dayOf = (at: number) => Math.floor(at / dayMillis) * dayMillis
const partitionName = (table: string, day: number) => `${table}_d${new Date(day).toISOString().slice(0, 10).replaceAll("-", "")}`

/** The default redaction: sensitive `detail` keys removed, messages dropped unless {@link Options.keepMessages} keeps them. */
const defaultRedaction = (options: Options) => {
  const keep = options.keepMessages
  const keeps: (entry: Port.Entry) => boolean = keep === undefined || keep === false
    ? () => false
    : keep === true
    ? () => true
    : typeof keep === "function"
    ? keep
    : (entry) => entry.topic !== undefined && keep.includes(entry.topic)
  return (entry: Port.Entry): Port.Entry | undefined => {
    let out = entry
    if (out.message !== undefined && !keeps(out)) {
      const { message: _, ...rest } = out
      out = new Port.Entry(rest, { disableValidation: true })
    }
    if (out.detail !== undefined) {
      const detail = Redaction.omitSensitive(out.detail)
      if (Object.keys(detail).length !== Object.keys(out.detail).length) out = new Port.Entry({ ...out, detail }, { disableValidation: true })
    }
    return options.redact === undefined ? out : options.redact(out)
  }
}

const makeWriter = (
  driver: string,
  options: Options,
  store: (batch: ReadonlyArray<Port.Entry>) => Effect.Effect<void, Port.AuditLogError>
) =>
  Effect.gen(function*() {
    const redact = defaultRedaction(options)
    const maxBatch = Math.max(1, options.maxBatch ?? 500)
    const buffer = yield* Queue.dropping<Port.Entry>(Math.max(1, options.maxBuffered ?? 100_000))
    const lock = yield* Effect.makeSemaphore(1)
    const written = Metric.tagged(writtenTotal, "driver", driver)
    const interval = Duration.decode(options.flushInterval ?? "200 millis")

    const storeBatch = (batch: ReadonlyArray<Port.Entry>) =>
      batch.length === 0 ? Effect.void : store(batch).pipe(
        Effect.retry(Schedule.exponential("50 millis").pipe(Schedule.intersect(Schedule.recurs(3)))),
        Effect.zipRight(Metric.incrementBy(written, batch.length)),
        Effect.catchAll((error) =>
          Effect.zipRight(
            Metric.incrementBy(Metric.tagged(droppedTotal, "reason", "storage"), batch.length),
            Effect.logWarning(`audit log (${driver}): ${batch.length} entries could not be stored`, error)
          )
        )
      )

    // Uninterruptible: a batch taken from the buffer is stored (or counted as dropped), never lost half-way.
    const drainOnce = Effect.uninterruptible(lock.withPermits(1)(
      Effect.flatMap(Queue.takeUpTo(buffer, maxBatch), (chunk) => storeBatch(Array.from(chunk)))
    ))
    // Fixed here as in the driver (a flush waits for a batch the background fiber is storing), so that the
    // benchmark's check of the stored rows holds for both paths; the cost measured is the write path's.
    const flushAll: Effect.Effect<void> = Effect.gen(function*() {
      yield* drainOnce
      while ((yield* Queue.size(buffer)) > 0) yield* drainOnce
    })

    // Entries still buffered when the scope closes are written then, after the background fiber stopped
    // (finalizers run in reverse order, so this one, added first, runs last).
    yield* Effect.addFinalizer(() => flushAll)
    // Woken by writes; lets a batch gather for `interval` (unless already full), then writes what is there.
    const signal = yield* Queue.sliding<void>(1)
    yield* Effect.forkScoped(Effect.forever(
      Effect.gen(function*() {
        yield* Queue.take(signal)
        if ((yield* Queue.size(buffer)) < maxBatch) yield* Effect.sleep(interval)
        yield* flushAll
      })
    ))

    const write = (entries: ReadonlyArray<Port.Entry>): Effect.Effect<void> =>
      Effect.suspend(() => {
        const kept: Array<Port.Entry> = []
        for (const entry of entries) {
          const out = redact(entry)
          if (out !== undefined) kept.push(out)
        }
        if (kept.length === 0) return Effect.void
        return Effect.flatMap(Queue.offerAll(buffer, kept), (all) =>
          all
            ? Queue.offer(signal, undefined)
            : Effect.zipRight(
              Metric.incrementBy(Metric.tagged(droppedTotal, "reason", "buffer-full"), kept.length),
              Queue.offer(signal, undefined)
            ))
      })

    return { write, flush: flushAll }
  })

/** The previous write path over a table the current driver created (and its day partitions). */
export const layer = (options: Options & { readonly table: string }): Layer.Layer<Port.AuditLog, unknown, SqlClient.SqlClient> =>
  Layer.scoped(
    Port.AuditLog,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const table = options.table
      const failed = (operation: string) => (cause: unknown) => new Port.AuditLogError({ operation, cause })
      const days = new Set<number>()
      const ensureDay = (day: number) =>
        days.has(day) ? Effect.void : sql.unsafe(
          `CREATE TABLE IF NOT EXISTS "${partitionName(table, day)}" PARTITION OF "${table}" FOR VALUES FROM (${day}) TO (${day + dayMillis})`
        ).pipe(
          Effect.catchAll(() => Effect.void),
          Effect.zipRight(Effect.sync(() => days.add(day)))
        )
      const insertTexts = new Map<number, string>()
      // `position` comes from its sequence: 14 values per row.
      const perRow = 14
      const store = (batch: ReadonlyArray<Port.Entry>) =>
        Effect.gen(function*() {
          for (const day of new Set(batch.map((entry) => dayOf(entry.at)))) yield* ensureDay(day)
          const params: Array<unknown> = []
          for (const e of batch) {
            params.push(
              e.eventId,
              e.stage,
              e.at,
              e.component,
              e.topic ?? null,
              e.outcome ?? null,
              e.attempt ?? null,
              e.durationMs ?? null,
              e.category ?? null,
              e.causationId ?? null,
              e.detail === undefined ? null : JSON.stringify(e.detail),
              e.message?.key ?? null,
              e.message === undefined ? null : Buffer.from(e.message.payload.buffer, e.message.payload.byteOffset, e.message.payload.byteLength),
              e.message === undefined ? null : JSON.stringify(e.message.headers)
            )
          }
          // The batch commits without waiting for its WAL flush: entries buffered in memory are already lost
          // by a crash, and the few milliseconds more this risks spare the audited transactions an fsync
          // queue shared with the audit log's.
          yield* sql.withTransaction(
            Effect.zipRight(sql`SET LOCAL synchronous_commit = off`, sql.unsafe(insertRows(batch.length), params))
          )
        }).pipe(Effect.mapError(failed("write")))
      const insertRows = (rows: number) => {
        let text = insertTexts.get(rows)
        if (text === undefined) {
          const values = Array.from({ length: rows }, (_, r) =>
            `(${Array.from({ length: perRow }, (_, c) => `$${r * perRow + c + 1}`).join(", ")})`).join(", ")
          text = `INSERT INTO "${table}" (event_id, stage, at, component, topic, outcome, attempt, duration_ms, category, causation_id, detail, message_key, payload, headers) VALUES ${values}`
          insertTexts.set(rows, text)
        }
        return text
      }
      const writer = yield* makeWriter("sql", { maxBatch: 500, ...options }, store)
      const unused = Effect.dieMessage("not part of the benchmark")
      return { write: writer.write, flush: writer.flush, timeline: () => unused, caused: () => unused, query: () => unused, cleanup: () => unused }
    })
  )

/** Creates the table with the current driver (migrations), so both write paths write the same shape. */
export const createTable = (table: string) => Effect.scoped(SqlAuditLog.make({ table }))
