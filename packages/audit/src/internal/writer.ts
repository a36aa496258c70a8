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
 * background fiber, so after it every entry written before the call is stored; so does closing the scope.
 *
 * The audited path pays for a redaction and an array push: the buffer is a plain array (writes are
 * synchronous, so nothing races them), and the background fiber is woken once per batch, not per write.
 */
export const makeWriter = (
  driver: string,
  options: Options,
  store: (batch: ReadonlyArray<Port.Entry>) => Effect.Effect<void, Port.AuditLogError>
) =>
  Effect.gen(function*() {
    const redact = defaultRedaction(options)
    const maxBatch = Math.max(1, options.maxBatch ?? 500)
    const maxBuffered = Math.max(1, options.maxBuffered ?? 100_000)
    let buffer: Array<Port.Entry> = []
    const lock = yield* Effect.makeSemaphore(1)
    const written = Metric.tagged(writtenTotal, "driver", driver)
    const bufferFull = Metric.tagged(droppedTotal, "reason", "buffer-full")
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

    // Takes at most one batch off the front of the buffer.
    const take = (): ReadonlyArray<Port.Entry> => {
      if (buffer.length <= maxBatch) {
        const all = buffer
        buffer = []
        return all
      }
      return buffer.splice(0, maxBatch)
    }
    // Uninterruptible: a batch taken from the buffer is stored (or counted as dropped), never lost half-way.
    const drainOnce = Effect.uninterruptible(lock.withPermits(1)(Effect.suspend(() => storeBatch(take()))))
    // At least one turn under the lock, even with nothing buffered: a batch the background fiber took off the
    // buffer may still be on its way to storage, and a flush must not return before it is stored.
    const flushAll: Effect.Effect<void> = Effect.zipRight(
      drainOnce,
      Effect.suspend(function loop(): Effect.Effect<void> {
        return buffer.length === 0 ? Effect.void : Effect.zipRight(drainOnce, Effect.suspend(loop))
      })
    )

    // Entries still buffered when the scope closes are written then, after the background fiber stopped
    // (finalizers run in reverse order, so this one, added first, runs last).
    yield* Effect.addFinalizer(() => flushAll)
    // Woken by the first write after a flush; lets a batch gather for `interval` (cut short when a whole
    // batch is waiting), then writes what is there.
    const wake = yield* Queue.sliding<void>(1)
    const full = yield* Queue.sliding<void>(1)
    let awake = false
    let hurried = false
    yield* Effect.forkScoped(Effect.forever(
      Effect.gen(function*() {
        yield* Queue.take(wake)
        if (buffer.length < maxBatch) yield* Effect.raceFirst(Effect.sleep(interval), Queue.take(full))
        yield* Queue.takeAll(full)
        // Writes from here on wake the next round; this one takes everything buffered before them.
        awake = false
        hurried = false
        yield* flushAll
      })
    ))

    const write = (entries: ReadonlyArray<Port.Entry>): Effect.Effect<void> =>
      Effect.suspend(() => {
        let dropped = 0
        for (const entry of entries) {
          const out = redact(entry)
          if (out === undefined) continue
          if (buffer.length >= maxBuffered) dropped++
          else buffer.push(out)
        }
        const counted = dropped === 0 ? Effect.void : Metric.incrementBy(bufferFull, dropped)
        if (buffer.length >= maxBatch && !hurried) {
          hurried = true
          awake = true
          return Effect.zipRight(counted, Effect.zipRight(Queue.offer(wake, undefined), Queue.offer(full, undefined)))
        }
        if (awake || buffer.length === 0) return counted
        awake = true
        return Effect.zipRight(counted, Queue.offer(wake, undefined))
      })

    return { write, flush: flushAll }
  })
