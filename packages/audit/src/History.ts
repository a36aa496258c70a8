/**
 * Replay from history: streams the audit log's `published` entries (whose messages were kept, see
 * `keepMessages`) from a point in time through a handler, or republishes them to a topic — to rebuild a
 * projection, or to feed a new consumer what it missed.
 *
 * - **Idempotent**: each event is handled once per run (the first `published` entry of an event id wins),
 *   and a republished message keeps its original id, so consumers that dedupe (inbox, idempotency store)
 *   apply it at most once however many times the replay runs.
 * - **Rate-limited**: at most `rate` messages per second (Effect `Clock`).
 * - **Progress**: `onProgress` after each page, with counts and the position reached, which `after` accepts
 *   to resume.
 */
import { AuditLog as Port } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { Chunk, Clock, Duration, Effect, Option, Stream } from "effect"

/** Where a replay stands. */
export interface Progress {
  /** Entries read. */
  readonly scanned: number
  /** Events handed to the handler (published). */
  readonly handled: number
  /** Entries skipped: a second `published` entry of an event already handled. */
  readonly duplicates: number
  /** Entries without a kept message (the driver was not told to keep that topic's messages). */
  readonly withoutMessage: number
  /** The last position read; pass it as `after` to resume. */
  readonly position: number
}

/** What to replay. */
export interface Selection {
  /** From this time (epoch millis). */
  readonly since: number
  /** Before this time (epoch millis). Default: the time the replay starts, so it ends. */
  readonly until?: number
  /** Only messages published to this topic. */
  readonly topic?: string
  /** Resume after this position. */
  readonly after?: number
  /** Messages per second. Default 100. */
  readonly rate?: number
  /** Entries read per page. Default 500. */
  readonly pageSize?: number
  /** Told after each page. */
  readonly onProgress?: (progress: Progress) => Effect.Effect<void>
}

/** A message from history, as it was published. */
export interface HistoricMessage {
  readonly entry: Port.Entry
  readonly message: Transport.OutgoingMessage
  readonly position: number
}

/** The `published` entries matching `selection`, page by page, in position order. */
export const entries = (
  selection: Omit<Selection, "rate" | "onProgress">
): Stream.Stream<Port.Positioned, Port.AuditLogError, Port.AuditLog> =>
  Stream.unwrap(Effect.gen(function*() {
    const log = yield* Port.AuditLog
    const until = selection.until ?? (yield* Clock.currentTimeMillis)
    const limit = Math.max(1, selection.pageSize ?? 500)
    return Stream.paginateChunkEffect(selection.after ?? 0, (after) =>
      Effect.map(
        log.query({ since: selection.since, until, stage: "published", after, limit, ...(selection.topic === undefined ? {} : { topic: selection.topic }) }),
        (page) => [Chunk.fromIterable(page), page.length < limit ? Option.none() : Option.some(page[page.length - 1]!.position)] as const
      ))
  }))

/** Runs `handle` over each event of the selection once, rate-limited, reporting progress; answers the final progress. */
export const run = <E, R>(
  selection: Selection,
  handle: (message: HistoricMessage) => Effect.Effect<void, E, R>
): Effect.Effect<Progress, E | Port.AuditLogError, R | Port.AuditLog> =>
  Effect.gen(function*() {
    const spacing = 1000 / Math.max(0.001, selection.rate ?? 100)
    const seen = new Set<string>()
    let progress: Progress = { scanned: 0, handled: 0, duplicates: 0, withoutMessage: 0, position: selection.after ?? 0 }
    let nextSlot = yield* Clock.currentTimeMillis
    const pageSize = Math.max(1, selection.pageSize ?? 500)
    let inPage = 0
    yield* Stream.runForEach(entries(selection), ({ entry, position }) =>
      Effect.gen(function*() {
        progress = { ...progress, scanned: progress.scanned + 1, position }
        if (seen.has(entry.eventId)) progress = { ...progress, duplicates: progress.duplicates + 1 }
        else if (entry.message === undefined) progress = { ...progress, withoutMessage: progress.withoutMessage + 1 }
        else {
          seen.add(entry.eventId)
          const now = yield* Clock.currentTimeMillis
          if (nextSlot > now) yield* Effect.sleep(Duration.millis(nextSlot - now))
          nextSlot = Math.max(now, nextSlot) + spacing
          yield* handle({ entry, position, message: { id: entry.eventId, ...entry.message } })
          progress = { ...progress, handled: progress.handled + 1 }
        }
        if (++inPage >= pageSize && selection.onProgress !== undefined) {
          inPage = 0
          yield* selection.onProgress(progress)
        }
      }))
    if (selection.onProgress !== undefined) yield* selection.onProgress(progress)
    return progress
  })

/** The header a message republished from history carries: the audit position it came from. */
export const ReplayedFromHistoryHeader = "bulwark-replayed-from-history"

/** Republishes the selection to `to` (original ids, keys, headers), once per event, rate-limited. */
export const replay = (
  selection: Selection & { readonly to: string }
): Effect.Effect<Progress, Transport.PublishError | Port.AuditLogError, Port.AuditLog | Transport.Publisher> =>
  Effect.flatMap(Transport.Publisher, (publisher) =>
    run(selection, ({ message, position }) =>
      publisher.publish(selection.to, [{
        ...message,
        headers: { ...message.headers, [ReplayedFromHistoryHeader]: String(position) }
      }])))
