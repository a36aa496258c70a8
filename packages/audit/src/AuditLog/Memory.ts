/**
 * The in-process audit log: entries in an array, with the same redaction and batching as the SQL driver
 * (so a test sees what production would store). Reads flush first, so a test reads its own writes.
 */
import { AuditLog as Port } from "@bulwark/core"
import { Clock, Effect, Layer, type Scope } from "effect"
import type { Options } from "../AuditLog.js"
import { makeWriter } from "../internal/writer.js"

/** The memory driver, with a view of what it stored. */
export interface MemoryAuditLog extends Port.Service {
  /** Every stored entry with its position, in write order. */
  readonly entries: () => ReadonlyArray<Port.Positioned>
}

/** Makes a memory audit log for the scope's lifetime. */
export const make = (options: Options = {}): Effect.Effect<MemoryAuditLog, never, Scope.Scope> =>
  Effect.gen(function*() {
    const stored: Array<Port.Positioned> = []
    const writer = yield* makeWriter("memory", { flushInterval: "10 millis", ...options }, (batch) =>
      Effect.sync(() => {
        for (const entry of batch) stored.push({ position: stored.length + 1, entry })
      }))
    const read = <A>(f: () => A) => Effect.zipRight(writer.flush, Effect.sync(f))
    const byTime = (entries: Array<Port.Entry>) => entries.sort((a, b) => a.at - b.at)
    return {
      write: writer.write,
      flush: writer.flush,
      entries: () => stored.slice(),
      timeline: (eventId) => read(() => byTime(stored.filter((p) => p.entry.eventId === eventId).map((p) => p.entry))),
      caused: (eventIds) => {
        const ids = new Set(eventIds)
        return read(() =>
          byTime(stored.filter((p) => p.entry.causationId !== undefined && ids.has(p.entry.causationId)).map((p) => p.entry))
        )
      },
      query: (query) =>
        read(() =>
          stored.filter((p) =>
            (query.after === undefined || p.position > query.after) &&
            (query.since === undefined || p.entry.at >= query.since) &&
            (query.until === undefined || p.entry.at < query.until) &&
            (query.stage === undefined || p.entry.stage === query.stage) &&
            (query.topic === undefined || p.entry.topic === query.topic)
          ).slice(0, query.limit ?? 1000)
        ),
      cleanup: (retentionMillis) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          read(() => {
            const before = stored.length
            const kept = stored.filter((p) => p.entry.at >= now - retentionMillis)
            stored.splice(0, stored.length, ...kept)
            return before - kept.length
          }))
    }
  })

/** Provides the {@link Port.AuditLog} in memory. */
export const layer = (options: Options = {}): Layer.Layer<Port.AuditLog> => Layer.scoped(Port.AuditLog, make(options))
