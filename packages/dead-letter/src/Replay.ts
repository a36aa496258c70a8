/**
 * Replay: dead-lettered messages go back to their origin topic through any `Publisher`, at a bounded rate,
 * each at most once per claim. An entry is claimed atomically before it is published and marked replayed
 * after, so two operators replaying the same entry at once publish it once; a publish that fails gives the
 * entry back. A crash between publish and mark leaves the entry claimed until `claimLease` ends, after
 * which it may be published again (at-least-once, like every transport: consumers stay idempotent).
 */
import { Observe } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { Duration, Effect, Option } from "effect"
import * as Store from "./DeadLetterStore.js"

/** Header set on a replayed message: the entry it came from. */
export const ReplayedFromHeader = "bulwark-replayed-from"

/** What to replay and how fast. */
export interface Options {
  /** Exactly these entries (unknown ids fail with `EntryNotFoundError`). Otherwise every pending entry matching `filter`. */
  readonly ids?: ReadonlyArray<string>
  readonly filter?: Omit<Store.Filter, "replay">
  /** Messages per second. Default 10. */
  readonly rate?: number
  /** How long a claim protects an entry from a concurrent replay. Default 1 minute. */
  readonly claimLease?: Duration.DurationInput
}

/** The outcome of one replay run. */
export interface Report {
  /** Entries published and marked replayed. */
  readonly replayed: ReadonlyArray<string>
  /** Entries skipped: already replayed, or being replayed by someone else. */
  readonly skipped: ReadonlyArray<string>
  /** Entries whose publish failed (given back, still pending), with the error. */
  readonly failed: ReadonlyArray<{ readonly id: string; readonly error: Transport.PublishError }>
}

/** Replays dead-lettered entries to their origin topics through the `Publisher` in context. */
export const replay = (
  options: Options = {}
): Effect.Effect<Report, Store.DeadLetterStoreError | Store.EntryNotFoundError, Store.DeadLetterStore | Transport.Publisher> =>
  Effect.gen(function*() {
    const store = yield* Store.DeadLetterStore
    const publisher = yield* Transport.Publisher
    const rate = options.rate ?? 10
    const spacing = Duration.millis(rate > 0 ? 1000 / rate : 0)
    const lease = options.claimLease ?? "1 minute"
    const ids = options.ids !== undefined
      ? yield* Effect.forEach(options.ids, (id) =>
        Effect.flatMap(store.get(id), Option.match({
          onNone: () => Effect.fail(new Store.EntryNotFoundError({ id })),
          onSome: (entry) => Effect.succeed(entry.id)
        })))
      : (yield* store.list({ ...options.filter, replay: "pending" })).map((entry) => entry.id)
    const replayed: Array<string> = []
    const skipped: Array<string> = []
    const failed: Array<{ id: string; error: Transport.PublishError }> = []
    let published = 0
    for (const id of ids) {
      const claimed = yield* store.claimReplay(id, lease)
      if (Option.isNone(claimed)) {
        yield* Observe.emit("replay", "skipped", { entryId: id })
        skipped.push(id)
        continue
      }
      const entry = claimed.value
      yield* Observe.emit("replay", "claimed", { entryId: id, messageId: entry.messageId })
      // Rate limit between publishes (Effect's Clock, so TestClock drives it in tests).
      if (published > 0) yield* Effect.sleep(spacing)
      published++
      const outcome = yield* Effect.either(publisher.publish(entry.originTopic, [{
        id: entry.messageId,
        key: entry.key,
        payload: entry.payload,
        headers: { ...entry.headers, [ReplayedFromHeader]: entry.id }
      }]))
      if (outcome._tag === "Left") {
        yield* store.releaseReplay(id)
        yield* Observe.emit("replay", "released", { entryId: id, messageId: entry.messageId, error: outcome.left.message })
        failed.push({ id, error: outcome.left })
        continue
      }
      yield* Observe.emit("replay", "published", { entryId: id, messageId: entry.messageId, topic: entry.originTopic })
      yield* store.markReplayed(id)
      yield* Observe.emit("replay", "replayed", { entryId: id })
      replayed.push(id)
    }
    return { replayed, skipped, failed }
  })
