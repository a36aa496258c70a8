import { AuditLog as Port } from "@bulwark/core"
import { Duration, Effect, Metric, Queue, Schedule } from "effect"
import { defaultRedaction, type Options } from "../AuditLog.js"

/** Entries stored, by driver. */
export const writtenTotal = Metric.counter("bulwark_audit_written_total", { description: "Audit entries stored", incremental: true })
/** Entries not stored (buffer full, or storage failing past its retries), by reason. */
export const droppedTotal = Metric.counter("bulwark_audit_dropped_total", { description: "Audit entries not stored", incremental: true })

/**
 * The shared writer: redaction, a bounded buffer, and a background fiber writing batches through `store`
 * (retried briefly; a batch still failing is dropped, counted and logged, never retried for ever so that
 * the buffer cannot grow without bound). `flush` writes what is buffered now, under the same lock as the
 * background fiber, so after it every entry written before the call is stored.
 */
export const makeWriter = (
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
    const flushAll: Effect.Effect<void> = Effect.gen(function*() {
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
