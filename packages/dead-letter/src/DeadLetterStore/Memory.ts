/** The in-process dead-letter store (tests, the simulator, the quick start). Time from Effect's `Clock`. */
import { Clock, DateTime, Duration, Effect, Layer, Option } from "effect"
import { Envelope } from "@bulwark/core"
import * as Store from "../DeadLetterStore.js"

/** Creates a memory store. */
export const make: Effect.Effect<Store.Service> = Effect.sync(() => {
  const entries = new Map<string, Store.DeadLetterEntry>()
  const claims = new Map<string, number>()
  // Fencing tokens per entry: the latest claim's; never reset while the entry lives.
  const tokens = new Map<string, number>()
  const byMessage = new Map<string, string>()
  const messageKey = (topic: string, id: string) => JSON.stringify([topic, id])
  // The last replay slot handed out, shared by every replayer over this store.
  let lastSlot = -Infinity

  // A claim still holds when its entry is being replayed under it (a bare id: under any claim).
  const held = (claim: Store.ReplayClaim, entry: Store.DeadLetterEntry | undefined): entry is Store.DeadLetterEntry => {
    if (entry === undefined || entry.replay !== "replaying") return false
    const token = Store.claimToken(claim)
    return token === undefined || token === tokens.get(entry.id)
  }

  const service: Store.Service = {
    add: (input) =>
      Effect.gen(function*() {
        const now = DateTime.unsafeMake(yield* Clock.currentTimeMillis)
        const origin = Store.replayOrigin(input.message.headers)
        const generation = input.replayGeneration ?? origin.generation
        // A replayed message travels under its own id: its entry is the one it was replayed from.
        const replayedFrom = origin.entryId === undefined ? undefined : entries.get(origin.entryId)
        const existingId = replayedFrom?.originTopic === input.message.topic
          ? replayedFrom.id
          : byMessage.get(messageKey(input.message.topic, input.message.id))
        const existing = existingId === undefined ? undefined : entries.get(existingId)
        if (existing !== undefined && !Store.isNewFailure(existing, generation)) return existing
        const entry = new Store.DeadLetterEntry({
          id: existing?.id ?? (yield* Envelope.uuid),
          messageId: existing?.messageId ?? input.message.id,
          originTopic: input.message.topic,
          key: input.message.key,
          payload: input.message.payload,
          headers: Store.originalHeaders(input.message.headers),
          type: Store.typeOf(input.message.payload),
          category: input.category,
          error: input.error,
          attempts: input.attempts,
          firstFailedAt: existing?.firstFailedAt ?? now,
          lastFailedAt: now,
          replay: "pending",
          replayedAt: existing?.replayedAt ?? null,
          // A failure of a replay the store never recorded (its replayer died before marking it) still counts it.
          replayCount: Math.max(existing?.replayCount ?? 0, generation ?? 0)
        })
        entries.set(entry.id, entry)
        claims.delete(entry.id)
        byMessage.set(messageKey(entry.originTopic, entry.messageId), entry.id)
        return entry
      }),
    list: (filter = {}) =>
      Effect.sync(() => {
        const found = [...entries.values()]
          .filter((entry) => Store.matches(entry, filter))
          // Stable sort over insertion order: entries that failed in the same millisecond keep their arrival order.
          .sort((a, b) => a.firstFailedAt.epochMillis - b.firstFailedAt.epochMillis)
        return filter.limit === undefined ? found : found.slice(0, filter.limit)
      }),
    get: (id) => Effect.sync(() => Option.fromNullable(entries.get(id))),
    depth: Effect.sync(() => [...entries.values()].filter((entry) => entry.replay !== "replayed").length),
    claimReplay: (id, lease) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const entry = entries.get(id)
        if (entry === undefined || entry.replay === "replayed") return Option.none()
        if (entry.replay === "replaying" && (claims.get(id) ?? 0) > now) return Option.none()
        const claimToken = (tokens.get(id) ?? 0) + 1
        const claimed = new Store.DeadLetterEntry({ ...entry, replay: "replaying" })
        entries.set(id, claimed)
        claims.set(id, now + Duration.toMillis(Duration.decode(lease)))
        tokens.set(id, claimToken)
        return Option.some(new Store.ClaimedEntry({ ...claimed, claimToken }))
      }),
    markReplayed: (claim) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const id = Store.claimId(claim)
        const entry = entries.get(id)
        if (!held(claim, entry)) return false
        entries.set(id, new Store.DeadLetterEntry({
          ...entry,
          replay: "replayed",
          replayedAt: DateTime.unsafeMake(now),
          replayCount: entry.replayCount + 1
        }))
        claims.delete(id)
        return true
      }),
    releaseReplay: (claim) =>
      Effect.sync(() => {
        const id = Store.claimId(claim)
        const entry = entries.get(id)
        if (!held(claim, entry)) return false
        entries.set(id, new Store.DeadLetterEntry({ ...entry, replay: "pending" }))
        claims.delete(id)
        return true
      }),
    groups: (filter = {}) =>
      Effect.sync(() => {
        const admitted = { ...filter, replay: filter.replay ?? Store.unreplayed }
        const found = new Map<string, { first: Store.DeadLetterEntry; count: number; last: number }>()
        const ordered = [...entries.values()].filter((entry) => Store.matches(entry, admitted))
          .sort((a, b) => a.firstFailedAt.epochMillis - b.firstFailedAt.epochMillis)
        for (const entry of ordered) {
          const fingerprint = Store.fingerprintOf(entry.error, entry.originTopic)
          const group = found.get(fingerprint)
          if (group === undefined) found.set(fingerprint, { first: entry, count: 1, last: entry.lastFailedAt.epochMillis })
          else {
            group.count++
            group.last = Math.max(group.last, entry.lastFailedAt.epochMillis)
          }
        }
        const groups = [...found.values()]
          .map((g) => Store.groupOf(g.first, g.count, g.first.firstFailedAt, DateTime.unsafeMake(g.last)))
          .sort((a, b) => b.count - a.count || a.firstFailedAt.epochMillis - b.firstFailedAt.epochMillis)
        return filter.limit === undefined ? groups : groups.slice(0, filter.limit)
      }),
    takeReplaySlot: (spacing) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        lastSlot = Math.max(now, lastSlot + Math.ceil(Duration.toMillis(Duration.decode(spacing))))
        return lastSlot
      }),
    purge: (before) =>
      Effect.sync(() => {
        let purged = 0
        for (const entry of [...entries.values()]) {
          if (entry.lastFailedAt.epochMillis < before.epochMillis) {
            entries.delete(entry.id)
            claims.delete(entry.id)
            tokens.delete(entry.id)
            byMessage.delete(messageKey(entry.originTopic, entry.messageId))
            purged++
          }
        }
        return purged
      })
  }
  return service
})

/** Provides the memory store as the `DeadLetterStore`. */
export const layer: Layer.Layer<Store.DeadLetterStore> = Layer.effect(Store.DeadLetterStore, make)
