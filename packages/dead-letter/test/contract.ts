/** The contract every DeadLetterStore driver passes (real time: run with `excludeTestServices`). */
import { Delivery, Failure } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { expect, layer } from "@effect/vitest"
import { DateTime, Effect, Fiber, Layer, Option, Ref } from "effect"
import * as Store from "../src/DeadLetterStore.js"
import * as Replay from "../src/Replay.js"

let counter = 0
const unique = (name: string) => `dlq-${name}-${Date.now().toString(36)}-${(counter++).toString(36)}-${Math.random().toString(36).slice(2, 7)}`

const cloudEvent = (id: string, type: string) =>
  new TextEncoder().encode(JSON.stringify({ specversion: "1.0", id, source: "/test", type, dataschema: `urn:bulwark:contract:orders/${type}:v3`, data: { n: 1 } }))

/** A dead-lettered message as a transport hands it over. */
export const newEntry = (
  topic: string,
  id: string,
  category: Failure.Category = "dependency",
  type = "order.paid"
): Store.NewEntry => ({
  message: {
    id,
    topic,
    key: `key-${id}`,
    payload: cloudEvent(id, type),
    headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", [Delivery.DeadLetterHeaders.category]: category }
  },
  category,
  error: new Failure.FailureRecord({ tag: "HttpError", message: "503 from billing", classification: "transient", category, status: 503 }),
  attempts: 10
})

/** A `Publisher` that records what it is asked to publish (any Publisher works; this one can be inspected). */
export class Published extends Effect.Service<Published>()("test/Published", {
  effect: Ref.make<ReadonlyArray<{ topic: string; message: Transport.OutgoingMessage }>>([])
}) {}

// Ids a "dedupe" topic has stored: it drops a repeated id, as JetStream does within its duplicate window.
const dedupeSeen = new Set<string>()

const recordingPublisher = Layer.effect(
  Transport.Publisher,
  Effect.map(Published, (published) => ({
    publish: (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>, options?: Transport.PublishOptions) =>
      topic.includes("unreachable")
        ? Effect.fail(new Transport.PublishError({ topic, cause: "broker down" }))
        // The broker took the message but never confirmed it (a timed-out publisher confirm).
        : topic.includes("unconfirmed")
        ? Effect.fail(new Transport.PublishError({ topic, cause: "publish not confirmed within 5s" }))
        : topic.includes("dedupe")
        ? Effect.suspend(() => {
          const fresh = messages.filter((m) => !dedupeSeen.has(`${topic}/${m.id}`))
          const duplicate = messages.find((m) => dedupeSeen.has(`${topic}/${m.id}`))
          fresh.forEach((m) => dedupeSeen.add(`${topic}/${m.id}`))
          const stored = Ref.update(published, (all) => [...all, ...fresh.map((message) => ({ topic, message }))])
          return duplicate !== undefined && options?.rejectDuplicates === true
            ? Effect.zipRight(stored, Effect.fail(new Transport.PublishError({ topic, cause: new Transport.DuplicateMessage({ id: duplicate.id }) })))
            : stored
        })
        // A "slow" broker takes 600 ms to confirm: longer than the short claim leases of the fencing tests.
        : Effect.zipRight(
          topic.includes("slow") ? Effect.sleep("600 millis") : Effect.void,
          Ref.update(published, (all) => [...all, ...messages.map((message) => ({ topic, message }))])
        )
  }))
).pipe(Layer.provideMerge(Published.Default))

/** Registers the contract suite for one driver. */
export const suite = <E>(name: string, driver: Layer.Layer<Store.DeadLetterStore, E>): void => {
  layer(Layer.merge(driver, recordingPublisher), { excludeTestServices: true, timeout: "60 seconds" })(
    `DeadLetterStore contract: ${name}`,
    (it) => {
      it.effect("stores a message whole and reads it back", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const topic = unique("orders")
          const input = newEntry(topic, "m-1", "auth", "order.refunded")
          const added = yield* store.add(input)
          const got = Option.getOrThrow(yield* store.get(added.id))
          expect(got.messageId).toBe("m-1")
          expect(got.originTopic).toBe(topic)
          expect(got.key).toBe("key-m-1")
          expect([...got.payload]).toEqual([...input.message.payload])
          expect(got.headers).toEqual({ traceparent: input.message.headers.traceparent })
          expect(got.type).toBe("order.refunded")
          expect(got.category).toBe("auth")
          expect(got.error).toEqual(input.error)
          expect(got.attempts).toBe(10)
          expect(got.replay).toBe("pending")
          expect(got.replayCount).toBe(0)
          expect(Option.isNone(yield* store.get("no-such-id"))).toBe(true)
        }))

      it.effect("the same message dead-lettered again updates its entry and keeps the first failure time", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const topic = unique("again")
          const first = yield* store.add(newEntry(topic, "m-2", "dependency"))
          yield* Effect.sleep("20 millis")
          const second = yield* store.add({ ...newEntry(topic, "m-2", "timeout"), attempts: 3 })
          expect(second.id).toBe(first.id)
          expect(second.firstFailedAt).toEqual(first.firstFailedAt)
          expect(second.lastFailedAt.epochMillis).toBeGreaterThan(first.lastFailedAt.epochMillis)
          expect(second.category).toBe("timeout")
          expect(second.attempts).toBe(3)
          expect((yield* store.list({ originTopic: topic })).length).toBe(1)
        }))

      it.effect("lists by category, type, origin topic and time range, oldest first", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const topic = unique("filter")
          const a = yield* store.add(newEntry(topic, "a", "schema", "t.one"))
          yield* Effect.sleep("15 millis")
          const b = yield* store.add(newEntry(topic, "b", "auth", "t.two"))
          yield* Effect.sleep("15 millis")
          const c = yield* store.add(newEntry(topic, "c", "auth", "t.one"))
          const ids = (entries: ReadonlyArray<Store.DeadLetterEntry>) => entries.map((e) => e.messageId)
          expect(ids(yield* store.list({ originTopic: topic }))).toEqual(["a", "b", "c"])
          expect(ids(yield* store.list({ originTopic: topic, category: "auth" }))).toEqual(["b", "c"])
          expect(ids(yield* store.list({ originTopic: topic, type: "t.one" }))).toEqual(["a", "c"])
          expect(ids(yield* store.list({ originTopic: topic, from: b.lastFailedAt }))).toEqual(["b", "c"])
          expect(ids(yield* store.list({ originTopic: topic, to: b.lastFailedAt }))).toEqual(["a"])
          expect(ids(yield* store.list({ originTopic: topic, limit: 2 }))).toEqual(["a", "b"])
          expect(ids(yield* store.list({ originTopic: topic, category: "timeout" }))).toEqual([])
          expect(a.id).not.toBe(c.id)
        }))

      it.effect("a replay claim is taken by exactly one of many concurrent claimants", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const entry = yield* store.add(newEntry(unique("claim"), "m-3"))
          const depth = yield* store.depth
          const claims = yield* Effect.all(Array.from({ length: 8 }, () => store.claimReplay(entry.id, "1 minute")), {
            concurrency: "unbounded"
          })
          expect(claims.filter(Option.isSome).length).toBe(1)
          yield* store.releaseReplay(entry.id)
          const again = yield* store.claimReplay(entry.id, "1 minute")
          expect(Option.isSome(again)).toBe(true)
          yield* store.markReplayed(entry.id)
          const replayed = Option.getOrThrow(yield* store.get(entry.id))
          expect(replayed.replay).toBe("replayed")
          expect(replayed.replayCount).toBe(1)
          expect(replayed.replayedAt).not.toBeNull()
          expect(yield* store.depth).toBe(depth - 1)
          expect(Option.isNone(yield* store.claimReplay(entry.id, "1 minute"))).toBe(true)
        }))

      it.effect("a claim whose replayer died can be taken again after its lease", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const entry = yield* store.add(newEntry(unique("lease"), "m-4"))
          expect(Option.isSome(yield* store.claimReplay(entry.id, "100 millis"))).toBe(true)
          expect(Option.isNone(yield* store.claimReplay(entry.id, "100 millis"))).toBe(true)
          yield* Effect.sleep("250 millis")
          expect(Option.isSome(yield* store.claimReplay(entry.id, "1 minute"))).toBe(true)
        }))

      it.effect("replay publishes each entry once to its origin topic, even when run twice at once", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const published = yield* Published
          const topic = unique("replay")
          const entries = yield* Effect.forEach(["r-1", "r-2", "r-3"], (id) => store.add(newEntry(topic, id, "dependency")))
          yield* store.add(newEntry(topic, "r-auth", "auth"))
          const [one, two] = yield* Effect.all([
            Replay.replay({ filter: { originTopic: topic, category: "dependency" }, rate: 1000 }),
            Replay.replay({ filter: { originTopic: topic, category: "dependency" }, rate: 1000 })
          ], { concurrency: 2 })
          expect([...one.replayed, ...two.replayed].sort()).toEqual(entries.map((e) => e.id).sort())
          const mine = (yield* Ref.get(published)).filter((p) => p.topic === topic)
          expect(mine.map((p) => p.message.id).sort()).toEqual(["r-1:replay:1", "r-2:replay:1", "r-3:replay:1"])
          const first = mine.find((p) => p.message.id === "r-1:replay:1")!
          expect(first.message.key).toBe("key-r-1")
          expect([...first.message.payload]).toEqual([...entries[0]!.payload])
          expect(first.message.headers[Replay.ReplayedFromHeader]).toBe(entries[0]!.id)
          const third = yield* Replay.replay({ ids: [entries[0]!.id] })
          expect(third).toEqual({ replayed: [], skipped: [entries[0]!.id], failed: [], lostClaim: [] })
          expect((yield* store.list({ originTopic: topic, replay: "pending" })).map((e) => e.messageId)).toEqual(["r-auth"])
          const missing = yield* Effect.flip(Replay.replay({ ids: ["no-such-entry"] }))
          expect(missing._tag).toBe("EntryNotFoundError")
        }))

      it.effect("a claim is fenced: once its lease ran out and the entry was claimed again, it can neither mark nor release", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const entry = yield* store.add(newEntry(unique("fence"), "f-1"))
          const stale = Option.getOrThrow(yield* store.claimReplay(entry.id, "100 millis"))
          yield* Effect.sleep("250 millis")
          const fresh = Option.getOrThrow(yield* store.claimReplay(entry.id, "1 minute"))
          expect(fresh.claimToken).toBeGreaterThan(stale.claimToken)
          expect(yield* store.markReplayed(stale)).toBe(false)
          expect(yield* store.releaseReplay(stale)).toBe(false)
          expect(Option.getOrThrow(yield* store.get(entry.id)).replay).toBe("replaying")
          expect(yield* store.markReplayed(fresh)).toBe(true)
          const replayed = Option.getOrThrow(yield* store.get(entry.id))
          expect([replayed.replay, replayed.replayCount]).toEqual(["replayed", 1])
          expect(yield* store.markReplayed(fresh)).toBe(false)
        }))

      it.effect("replay waits out its rate limit before claiming: a lease shorter than the spacing still publishes each entry once", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const published = yield* Published
          const topic = unique("spacing")
          const entries = yield* Effect.forEach(["s-1", "s-2", "s-3"], (id) => store.add(newEntry(topic, id)))
          // 2 a second is 500 ms between publishes; the second replayer starts once a 250 ms lease taken before
          // the first one's sleep would have run out (margins wide enough for a loaded machine).
          // By id, so the second replayer tries every entry, whatever its status when the run starts.
          const options = { ids: entries.map((e) => e.id), rate: 2, claimLease: "250 millis" } as const
          const [one, two] = yield* Effect.all([
            Replay.replay(options),
            Effect.zipRight(Effect.sleep("300 millis"), Replay.replay(options))
          ], { concurrency: 2 })
          const ids = (yield* Ref.get(published)).filter((p) => p.topic === topic).map((p) => p.message.id).sort()
          expect(ids).toEqual(["s-1:replay:1", "s-2:replay:1", "s-3:replay:1"])
          expect([...one.replayed, ...two.replayed].sort()).toEqual(entries.map((e) => e.id).sort())
        }))

      it.effect("a replayer that lost its claim while publishing reports it lost, not replayed", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const entry = yield* store.add(newEntry(unique("slow"), "l-1"))
          // Publishing takes 600 ms, the lease 200 ms: the second replayer takes the entry over meanwhile.
          const [one, two] = yield* Effect.all([
            Replay.replay({ ids: [entry.id], claimLease: "200 millis" }),
            Effect.zipRight(Effect.sleep("400 millis"), Replay.replay({ ids: [entry.id], claimLease: "1 minute" }))
          ], { concurrency: 2 })
          expect(one).toEqual({ replayed: [], skipped: [], failed: [], lostClaim: [entry.id] })
          expect(two).toEqual({ replayed: [entry.id], skipped: [], failed: [], lostClaim: [] })
          expect(Option.getOrThrow(yield* store.get(entry.id)).replayCount).toBe(1)
        }))

      it.effect("a filter-based replay takes over an entry whose replayer died holding the claim, once the lease ended", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const published = yield* Published
          const topic = unique("stranded")
          const stranded = yield* store.add(newEntry(topic, "d-1"))
          const held = yield* store.add(newEntry(topic, "d-2"))
          // Two replayers died after claiming: one with a short lease, one whose lease still runs.
          yield* store.claimReplay(stranded.id, "100 millis")
          yield* store.claimReplay(held.id, "1 minute")
          yield* Effect.sleep("250 millis")
          const report = yield* Replay.replay({ filter: { originTopic: topic } })
          expect(report.replayed).toEqual([stranded.id])
          expect(report.skipped).toEqual([held.id])
          expect((yield* Ref.get(published)).filter((p) => p.topic === topic).map((p) => p.message.id)).toEqual(["d-1:replay:1"])
          expect((yield* store.list({ originTopic: topic, replay: ["pending", "replaying"] })).map((e) => e.id)).toEqual([held.id])
        }))

      it.effect("a stale copy of a dead-lettering does not revive an entry replayed since; a failed replay does", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const topic = unique("stale")
          // As the drain stores a transport's copy: it knows the copy is of the original message (generation 0).
          const input: Store.NewEntry = { ...newEntry(topic, "c-1"), replayGeneration: 0 }
          const entry = yield* store.add(input)
          // Replayed; then the drain, which crashed before acking its copy, gets that copy again.
          yield* store.markReplayed(Option.getOrThrow(yield* store.claimReplay(entry.id, "1 minute")))
          const stale = yield* store.add(input)
          expect([stale.id, stale.replay, stale.replayCount]).toEqual([entry.id, "replayed", 1])
          // The replay fails too: its copy travels under the replay's id and finds the entry through its headers.
          const again: Store.NewEntry = {
            ...newEntry(topic, "c-1"),
            message: {
              ...input.message,
              id: Replay.replayMessageId("c-1", 1),
              headers: { ...input.message.headers, [Replay.ReplayedFromHeader]: entry.id, [Replay.ReplayGenerationHeader]: "1" }
            },
            attempts: 4
          }
          const failedAgain = yield* store.add(again)
          expect([failedAgain.id, failedAgain.messageId, failedAgain.replay, failedAgain.replayCount, failedAgain.attempts])
            .toEqual([entry.id, "c-1", "pending", 1, 4])
          expect(failedAgain.headers).toEqual({ traceparent: input.message.headers.traceparent })
          expect((yield* store.list({ originTopic: topic })).length).toBe(1)
          // While it is being replayed again, neither copy (the original's, the first replay's) resets it.
          const claim = Option.getOrThrow(yield* store.claimReplay(entry.id, "1 minute"))
          expect((yield* store.add(input)).replay).toBe("replaying")
          expect((yield* store.add(again)).replay).toBe("replaying")
          expect(yield* store.markReplayed(claim)).toBe(true)
          expect((yield* store.add(again)).replay).toBe("replayed")
          // A replay the store never recorded as published (its replayer died before marking) still counts.
          const third = yield* store.add({
            ...again,
            message: { ...again.message, headers: { ...again.message.headers, [Replay.ReplayGenerationHeader]: "3" } }
          })
          expect([third.replay, third.replayCount]).toEqual(["pending", 3])
        }))

      it.effect("a failure of unknown generation (the middleware's) always makes the entry pending again, even mid-replay", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const input = newEntry(unique("unknown-generation"), "g-1")
          const entry = yield* store.add(input)
          yield* store.markReplayed(Option.getOrThrow(yield* store.claimReplay(entry.id, "1 minute")))
          const failed = yield* store.add(input)
          expect([failed.id, failed.replay, failed.replayCount]).toEqual([entry.id, "pending", 1])
          // The replayed message failed before its replayer could mark it: the late mark is refused.
          const claim = Option.getOrThrow(yield* store.claimReplay(entry.id, "1 minute"))
          expect((yield* store.add(input)).replay).toBe("pending")
          expect(yield* store.markReplayed(claim)).toBe(false)
          expect(Option.getOrThrow(yield* store.get(entry.id)).replay).toBe("pending")
        }))

      it.effect("a replay whose publish fails leaves the entry pending", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const entry = yield* store.add(newEntry(unique("unreachable"), "u-1"))
          const report = yield* Replay.replay({ ids: [entry.id] })
          expect(report.replayed).toEqual([])
          expect(report.failed.map((f) => f.id)).toEqual([entry.id])
          expect(Option.getOrThrow(yield* store.get(entry.id)).replay).toBe("pending")
        }))

      it.effect("a publish the broker drops as a duplicate, or does not confirm, fails the entry's replay: never replayed", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const publisher = yield* Transport.Publisher
          const dedupeTopic = unique("dedupe")
          const dropped = yield* store.add(newEntry(dedupeTopic, "dup-1"))
          // A replayer published the first replay, then died before marking it; its lease has ended.
          yield* store.claimReplay(dropped.id, "1 millis")
          yield* publisher.publish(dedupeTopic, [{ id: Replay.replayMessageId("dup-1", 1), key: "k", payload: new Uint8Array(), headers: {} }])
          const unconfirmed = yield* store.add(newEntry(unique("unconfirmed"), "unc-1"))
          yield* Effect.sleep("20 millis")
          const report = yield* Replay.replay({ ids: [dropped.id, unconfirmed.id] })
          expect(report.replayed).toEqual([])
          expect(report.failed.map((f) => f.id)).toEqual([dropped.id, unconfirmed.id])
          expect(report.failed[0]!.error.cause).toBeInstanceOf(Transport.DuplicateMessage)
          for (const id of [dropped.id, unconfirmed.id]) {
            expect(Option.getOrThrow(yield* store.get(id)).replay).toBe("pending")
          }
        }))

      it.effect("replay slots are shared: each one follows the slot before it by the spacing", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const slots = yield* Effect.forEach(Array.from({ length: 10 }), () => store.takeReplaySlot("100 millis"), {
            concurrency: 10
          })
          const sorted = [...slots].sort((a, b) => a - b)
          expect(sorted.slice(1).map((slot, i) => slot - sorted[i]!)).toEqual(Array.from({ length: 9 }, () => 100))
        }))

      it.effect("the rate is global: three replayers at rate 5 publish at most 5 a second between them", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const published = yield* Published
          const topic = unique("global-rate")
          const entries = yield* Effect.forEach(Array.from({ length: 12 }, (_, i) => `g-${i}`), (id) => store.add(newEntry(topic, id)))
          const shares = [0, 1, 2].map((r) => entries.filter((_, i) => i % 3 === r).map((e) => e.id))
          const publishedHere = Effect.map(Ref.get(published), (all) => all.filter((p) => p.topic === topic).length)
          const started = Date.now()
          const replayers = yield* Effect.fork(Effect.all(shares.map((ids) => Replay.replay({ ids, rate: 5 })), { concurrency: 3 }))
          // Counted, not timed: a publish never precedes its slot, and slots are 200 ms apart whatever the
          // machine's load, so by any moment at most 1 + 5/s × elapsed have gone out (15/s without the store).
          yield* Effect.sleep("1 second")
          const soFar = yield* publishedHere
          const elapsed = (Date.now() - started) / 1000
          expect(soFar).toBeLessThanOrEqual(1 + Math.floor(5 * elapsed))
          const reports = yield* Fiber.join(replayers)
          expect(reports.flatMap((r) => r.replayed).sort()).toEqual(entries.map((e) => e.id).sort())
          expect(yield* publishedHere).toBe(12)
          // The same bound at the end: 12 publishes take at least 11 slot spacings.
          expect(Date.now() - started).toBeGreaterThanOrEqual(11 * 200)
        }))

      it.effect("failure groups: same error type, message template and topic; listed largest first and replayed as a group", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const published = yield* Published
          const [topic, other] = [unique("groups"), unique("groups-other")]
          const failing = (t: string, id: string, tag: string, message: string): Store.NewEntry => ({
            ...newEntry(t, id),
            error: new Failure.FailureRecord({ tag, message, classification: "transient", category: "dependency" })
          })
          yield* store.add(failing(topic, "a-1", "HttpError", "503 from billing for ord_123 (request 9f86d081884c7d65)"))
          yield* store.add(failing(topic, "a-2", "HttpError", "503 from billing for ord_456 (request 4e07408562bedb8b)"))
          yield* store.add(failing(topic, "a-3", "HttpError", "502 from billing for ord_789 (request 8527a891e224136e)"))
          yield* store.add(failing(topic, "b-1", "Timeout", "no answer after 30000 ms"))
          // The same error on another topic is another group.
          yield* store.add(failing(other, "c-1", "HttpError", "503 from billing for ord_999 (request 0123456789abcdef)"))
          const groups = yield* store.groups({ originTopic: topic })
          expect(groups.map((g) => [g.errorTag, g.template, g.count])).toEqual([
            ["HttpError", "<n> from billing for <id> (request <hex>)", 3],
            ["Timeout", "no answer after <n> ms", 1]
          ])
          const [http] = groups
          expect(http!.fingerprint).toBe(Store.fingerprintOf({ tag: "HttpError", message: "500 from billing for ord_1 (request 0000000a)" }, topic))
          expect(http!.originTopic).toBe(topic)
          expect(Option.getOrThrow(yield* store.get(http!.sampleId)).messageId).toBe("a-1")
          expect((yield* store.list({ fingerprint: http!.fingerprint })).map((e) => e.messageId)).toEqual(["a-1", "a-2", "a-3"])
          const otherGroups = yield* store.groups({ originTopic: other })
          expect(otherGroups).toHaveLength(1)
          expect(otherGroups[0]!.fingerprint).not.toBe(http!.fingerprint)

          const report = yield* Replay.replay({ filter: { fingerprint: http!.fingerprint }, rate: 100 })
          expect(report.replayed).toHaveLength(3)
          expect((yield* Ref.get(published)).filter((p) => p.topic === topic).map((p) => p.message.id).sort())
            .toEqual(["a-1:replay:1", "a-2:replay:1", "a-3:replay:1"])
          // Replayed entries leave the default view; the rest of the topic's failures are still grouped.
          expect((yield* store.groups({ originTopic: topic })).map((g) => g.errorTag)).toEqual(["Timeout"])
          expect((yield* store.groups({ originTopic: topic, replay: "replayed" })).map((g) => g.count)).toEqual([3])
        }))

      it.effect("purge deletes only entries last failed before the cutoff", () =>
        Effect.gen(function*() {
          const store = yield* Store.DeadLetterStore
          const topic = unique("purge")
          yield* store.add(newEntry(topic, "old"))
          yield* Effect.sleep("30 millis")
          const cutoff = yield* DateTime.now
          yield* Effect.sleep("10 millis")
          yield* store.add(newEntry(topic, "new"))
          const purged = yield* store.purge(cutoff)
          expect(purged).toBeGreaterThanOrEqual(1)
          expect((yield* store.list({ originTopic: topic })).map((e) => e.messageId)).toEqual(["new"])
        }))
    }
  )
}
