/**
 * Replay: dead-lettered messages go back to their origin topic through any `Publisher`, at a bounded rate,
 * each at most once per claim. An entry is claimed atomically right before it is published (the rate limit
 * waits before the claim, never while holding it) and marked replayed after, so two operators replaying the
 * same entry at once publish it once; a publish that fails gives the entry back. The claim carries a fencing
 * token: a replayer whose lease ran out before it could mark the entry finds the mark refused and reports
 * the entry as `lostClaim`. A crash between claim and mark leaves the entry claimed until `claimLease` ends,
 * after which it may be published again (at-least-once, like every transport: consumers stay idempotent).
 *
 * Each replay travels under its own transport message id, `<message id>:replay:<n>` for the n-th replay of
 * the entry, so a broker that deduplicates by id (NATS JetStream's duplicate window) does not drop it as a
 * copy of the original, while two replayers racing on the same replay still collide there. The payload (and
 * so the envelope id consumers deduplicate on) is unchanged. Replay publishes with `rejectDuplicates`: a
 * message the broker drops as a duplicate, like one it does not confirm, is a failure (the entry stays
 * pending), never `replayed`.
 *
 * The rate is global: every replayer over one store takes its publish slots from the store
 * (`takeReplaySlot`), so three replayers at `rate: 5` publish five messages a second between them, not fifteen.
 * With `limiter` (an `@bulwark/resilience` rate limiter, shared over Redis or SQL) the slots come from it
 * instead, so replay can share one limit with everything else that calls the same destination.
 */
import { AuditLog, Observe, Telemetry, TraceContext } from "@bulwark/core"
import type * as RateLimiter from "@bulwark/resilience/RateLimiter"
import type { RateLimiterStoreError } from "@bulwark/resilience/RateLimiterStore"
import { Transport } from "@bulwark/transport"
import { Clock, Duration, Effect, Option } from "effect"
import * as Store from "./DeadLetterStore.js"

/** Header set on a replayed message: the entry it came from. */
export const ReplayedFromHeader = Store.ReplayedFromHeader
/** Header set on a replayed message: which replay of its entry it is (1 for the first). */
export const ReplayGenerationHeader = Store.ReplayGenerationHeader

/** The transport message id of the `generation`-th replay of a message. */
export const replayMessageId = (messageId: string, generation: number): string => `${messageId}:replay:${generation}`

/** What to replay and how fast. */
export interface Options {
  /**
   * Exactly these entries (unknown ids fail with `EntryNotFoundError`). Otherwise every entry matching
   * `filter` that is pending, or claimed by a replayer whose lease has ended (it died before marking it).
   */
  readonly ids?: ReadonlyArray<string>
  readonly filter?: Omit<Store.Filter, "replay">
  /** Messages per second, across every replayer over the store (the slots are held in the store). Default 10. */
  readonly rate?: number
  /** How long a claim protects an entry from a concurrent replay. Default 1 minute. */
  readonly claimLease?: Duration.DurationInput
  /**
   * A shared rate limiter to take each publish's permit from, instead of `rate` and the store's slots. A
   * permit is taken before the entry is claimed; when none comes within the limiter's wait bound, the replay
   * stops with the limiter's error and the entries not yet claimed stay pending.
   */
  readonly limiter?: RateLimiter.RateLimiter
  /** The limiter key. Default `"dead-letter-replay"`. */
  readonly limiterKey?: string
}

/** The outcome of one replay run. */
export interface Report {
  /** Entries published and marked replayed. */
  readonly replayed: ReadonlyArray<string>
  /** Entries skipped: already replayed, or being replayed by someone else. */
  readonly skipped: ReadonlyArray<string>
  /** Entries whose publish failed (given back, still pending), with the error. */
  readonly failed: ReadonlyArray<{ readonly id: string; readonly error: Transport.PublishError }>
  /**
   * Entries published whose claim was lost before they could be marked (the lease ran out and someone else
   * claimed them, or they were dead-lettered again meanwhile): the newer claim decides their state.
   */
  readonly lostClaim: ReadonlyArray<string>
}

/**
 * One replay as a root `dead_letter.replay {topic}` span linked to the trace the entry was dead-lettered in;
 * the message keeps that context, so its consumer continues the original trace.
 */
const replaySpan = (entry: Store.DeadLetterEntry) =>
  Telemetry.withSafeSpan(`dead_letter.replay ${entry.originTopic}`, {
    kind: "producer",
    root: true,
    links: Option.toArray(TraceContext.linkTo(entry.headers)),
    attributes: {
      ...Telemetry.messagingAttributes({ operationType: "send", operationName: "dead_letter.replay", destination: entry.originTopic }),
      ...Telemetry.correlationAttributes({ id: entry.messageId, headers: entry.headers }),
      [Telemetry.Attr.messageId]: entry.messageId,
      [Telemetry.Attr.deadLetterEntryId]: entry.id,
      [Telemetry.Attr.deadLetterCategory]: entry.category
    }
  })

/** Replays dead-lettered entries to their origin topics through the `Publisher` in context. */
export const replay = (
  options: Options = {}
): Effect.Effect<
  Report,
  | Store.DeadLetterStoreError
  | Store.EntryNotFoundError
  | RateLimiter.RateLimited
  | RateLimiter.InvalidLimit
  | RateLimiterStoreError,
  Store.DeadLetterStore | Transport.Publisher
> =>
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
      // Claimed entries whose lease ended are listed too: `claimReplay` takes only those, skips live claims.
      : (yield* store.list({ ...options.filter, replay: ["pending", "replaying"] })).map((entry) => entry.id)
    const replayed: Array<string> = []
    const skipped: Array<string> = []
    const failed: Array<{ id: string; error: Transport.PublishError }> = []
    const lostClaim: Array<string> = []
    for (const id of ids) {
      // Rate limit (Effect's Clock, so TestClock drives it in tests), before the claim: sleeping while
      // holding it could outlast the lease and let a second replayer publish the entry too. The slot comes
      // from the store, so the rate holds across every replayer.
      if (options.limiter !== undefined) {
        yield* options.limiter.acquire(options.limiterKey ?? "dead-letter-replay")
      } else if (Duration.toMillis(spacing) > 0) {
        const slot = yield* store.takeReplaySlot(spacing)
        const now = yield* Clock.currentTimeMillis
        if (slot > now) yield* Effect.sleep(Duration.millis(slot - now))
      }
      const claimed = yield* store.claimReplay(id, lease)
      if (Option.isNone(claimed)) {
        yield* Observe.emit("replay", "skipped", { entryId: id })
        skipped.push(id)
        continue
      }
      const entry = claimed.value
      yield* Observe.emit("replay", "claimed", { entryId: id, messageId: entry.messageId })
      const generation = entry.replayCount + 1
      const outcome = yield* Effect.either(publisher.publish(entry.originTopic, [{
        id: replayMessageId(entry.messageId, generation),
        key: entry.key,
        payload: entry.payload,
        headers: { ...entry.headers, [ReplayedFromHeader]: entry.id, [ReplayGenerationHeader]: String(generation) }
      }], { rejectDuplicates: true }).pipe(replaySpan(entry)))
      if (outcome._tag === "Left") {
        // A lost claim needs no release: its newer claimant owns the entry now.
        yield* store.releaseReplay(entry)
        yield* Observe.emit("replay", "released", { entryId: id, messageId: entry.messageId, error: outcome.left.message })
        failed.push({ id, error: outcome.left })
        continue
      }
      yield* Observe.emit("replay", "published", { entryId: id, messageId: entry.messageId, topic: entry.originTopic })
      if (yield* store.markReplayed(entry)) {
        yield* Observe.emit("replay", "replayed", { entryId: id })
        // Two entries: one on the original's timeline, and one for the copy (under its own id) caused by the
        // original, so the original's story goes on with the copy's delivery.
        yield* AuditLog.record(() => {
          const replayId = replayMessageId(entry.messageId, generation)
          const common = { stage: "replayed" as const, component: "dead-letter", topic: entry.originTopic, attempt: generation }
          return [
            { ...common, eventId: entry.messageId, outcome: "republished", detail: { entryId: id, replayId } },
            { ...common, eventId: replayId, outcome: "copy", causationId: entry.messageId, detail: { entryId: id } }
          ]
        })
        replayed.push(id)
      } else {
        yield* Observe.emit("replay", "lost-claim", { entryId: id })
        lostClaim.push(id)
      }
    }
    return { replayed, skipped, failed, lostClaim }
  })
