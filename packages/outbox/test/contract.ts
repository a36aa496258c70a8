/**
 * The contract every OutboxStore driver passes, through the real `Outbox.append` and `Relay`. Drivers with
 * virtual time (memory under `TestClock`) run the same tests: waits advance the test clock instead of
 * sleeping, and an "autopilot" advances it while the test waits on the relay.
 */
import { Delivery, Envelope, Failure } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { expect, layer } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, Fiber, Layer, Metric, Option, Schedule, Schema, type Scope, TestClock } from "effect"
import * as Outbox from "../src/Outbox.js"
import * as OutboxStore from "../src/OutboxStore.js"
import * as Relay from "../src/Relay.js"
import { recordingPublisher } from "./helpers.js"

/** A fresh store for one test and how to run a transaction on it. */
export interface Fresh<R> {
  readonly store: OutboxStore.Service
  readonly transaction: <A, E, R2>(effect: Effect.Effect<A, E, R2>) => Effect.Effect<A, unknown, R | R2>
}

/** How the suite reaches one driver. */
export interface Harness<R> {
  readonly name: string
  /** Shared by the tests (the database, or nothing). */
  readonly layer: Layer.Layer<R, unknown>
  /** Whether time is the `TestClock` (memory) or real (SQL). */
  readonly virtualTime: boolean
  /** Whether relays lease partitions of keys rather than rows (a claim then holds several rows of a key). */
  readonly partitioned?: boolean
  readonly fresh: (label: string) => Effect.Effect<Fresh<R>, never, R | Scope.Scope>
}

const Order = Schema.Struct({ orderId: Schema.String, amount: Schema.Number })
const appendOrders = Outbox.append(Order)
const encoder = new TextEncoder()

const envelope = (subject: string, n: number, headers: Record<string, string> = {}) =>
  Envelope.make({ type: "com.example.order.paid", source: "/orders", subject, data: { orderId: `o-${n}`, amount: n }, id: `${subject}-${n}`, headers })

const raw = (id: string, key: string): Transport.OutgoingMessage => ({ id, key, payload: encoder.encode(id), headers: {} })

/** Provides the store as the port and as the `Outbox` (what `Outbox.append` and `Relay` need). */
export const provideStore = (store: OutboxStore.Service) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.provideService(Outbox.Outbox, Outbox.fromStore(store)),
    Effect.provideService(OutboxStore.OutboxStore, store)
  )

/** Classifies a `PublishError` by what the broker said (its cause), as an application would with `Failure.withRules`. */
const byCause = Failure.withRules([(error) =>
  error instanceof Transport.PublishError ? Option.some(Failure.classifyWith(Failure.defaultRules, error.cause)) : Option.none()
])

const transient = (message: string) => new Failure.TransientError({ category: "dependency", message })

/** Registers the contract suite for one driver. */
export const contract = <R>(harness: Harness<R>): void => {
  const virtual = harness.virtualTime
  /** Lets `duration` pass: the test clock moves, or the test sleeps. */
  const pass = (duration: Duration.DurationInput) => virtual ? TestClock.adjust(duration) : Effect.sleep(duration)
  /** Waits for `effect`, which needs the relays to progress: in virtual time the clock is advanced meanwhile. */
  const settle = <A, E, R2>(effect: Effect.Effect<A, E, R2>) =>
    virtual
      ? Effect.raceFirst(effect, Effect.forever(TestClock.adjust("10 millis")))
      : effect.pipe(Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => "settle timed out" }), Effect.orDie)
  /** Polls `check` until it holds; dies after 10 s (of the driver's time). */
  const eventually = <E, R2>(what: string, check: Effect.Effect<boolean, E, R2>) =>
    check.pipe(
      Effect.filterOrFail((ok) => ok, () => what),
      Effect.retry(Schedule.spaced("10 millis").pipe(Schedule.upTo("10 seconds"))),
      (polled) => virtual ? Effect.raceFirst(polled, Effect.forever(TestClock.adjust("10 millis"))) : polled,
      Effect.mapError((e) => `timed out waiting until ${String(e)}`),
      Effect.orDie
    )
  /** A publisher whose first publish never returns (a relay stuck mid-batch); `hung` completes when it starts. */
  const firstPublishHangs = Effect.map(Deferred.make<void>(), (hung) => ({
    hung,
    recorder: recordingPublisher((_, __, call) =>
      call === 0 ? Effect.zipRight(Deferred.succeed(hung, undefined), Effect.never) : Effect.void
    )
  }))
  const startRelay = (store: OutboxStore.Service, publisher: Layer.Layer<Transport.Publisher>, options: Relay.Options = {}) =>
    Relay.run({ pollInterval: "100 millis", backoffBase: "10 millis", ...options }).pipe(
      byCause,
      provideStore(store),
      Effect.provide(publisher),
      Effect.forkScoped
    )
  const makeRelay = (store: OutboxStore.Service, publisher: Layer.Layer<Transport.Publisher>, options: Relay.Options = {}) =>
    Relay.make(options).pipe(
      Effect.map((relay) => ({ ...relay, round: byCause(relay.round) })),
      provideStore(store),
      Effect.provide(publisher)
    )

  layer(harness.layer, { excludeTestServices: !virtual, timeout: "60 seconds" })(`OutboxStore contract: ${harness.name}`, (it) => {
    it.scoped("append outside a transaction is a typed error and writes nothing", () =>
      Effect.gen(function*() {
        const { store } = yield* harness.fresh("outside")
        const error = yield* appendOrders("orders", [yield* envelope("k", 1)]).pipe(provideStore(store), Effect.flip)
        expect(error._tag).toBe("OutsideTransaction")
        expect(yield* store.backlog).toBe(0)
      }))

    it.scoped("a failed, died or interrupted transaction leaves no row; a committed one is relayed intact, trace headers included", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("roundtrip")
        const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        const kept = yield* envelope("order-1", 1, { traceparent, "correlation-id": "c-1" })
        const staged = Effect.zipRight(appendOrders("orders", [yield* envelope("order-2", 2)]), Effect.void)
        expect(yield* transaction(Effect.zipRight(staged, Effect.fail("abort" as const))).pipe(provideStore(store), Effect.flip)).toBe("abort")
        const died = yield* Effect.exit(transaction(Effect.zipRight(staged, Effect.die("crash"))).pipe(provideStore(store)))
        expect(died._tag).toBe("Failure")
        // A crash mid-transaction: the fiber is interrupted after its append, before the commit.
        const appended = yield* Deferred.make<void>()
        const hanging = yield* transaction(Effect.zipRight(staged, Effect.zipRight(Deferred.succeed(appended, undefined), Effect.never))).pipe(
          provideStore(store),
          Effect.fork
        )
        yield* Deferred.await(appended)
        yield* Fiber.interrupt(hanging)
        expect(yield* store.backlog).toBe(0)

        yield* transaction(appendOrders("orders", [kept])).pipe(provideStore(store))
        expect(yield* store.backlog).toBe(1)
        const recorder = recordingPublisher()
        yield* startRelay(store, recorder.layer)
        yield* settle(store.drained)
        expect(yield* store.backlog).toBe(0)
        expect(recorder.published.map((p) => p.message.id)).toEqual(["order-1-1"])
        const message = recorder.published[0]!.message
        expect(message.key).toBe("order-1")
        // The row stays in the carried trace: the carried context itself when the append ran under a span of
        // another trace (a driver's transaction span), else the append's own span, its child.
        expect(message.headers.traceparent!.split("-")[1]).toBe("0af7651916cd43dd8448eb211c80319c")
        const decoded = yield* Envelope.decode(Order)(message.payload)
        expect(decoded.data).toEqual({ orderId: "o-1", amount: 1 })
        expect(decoded.headers["correlation-id"]).toBe("c-1")
      }))

    if (!harness.partitioned) {
      it.scoped("claim: heads of keys only, key \"\" unordered, other relays' leases skipped, batch limit, available_at respected", () =>
        Effect.gen(function*() {
          const { store, transaction } = yield* harness.fresh("claim")
          yield* transaction(store.appendMessages("t", [raw("a1", "A"), raw("a2", "A"), raw("u1", ""), raw("b1", "B"), raw("u2", ""), raw("c1", "C")]))
          const lease = { leaseMillis: 60_000 }
          const first = yield* store.claim({ relayId: "r1", limit: 3, ...lease })
          expect(first.map((r) => r.message.id)).toEqual(["a1", "u1", "b1"])
          const second = yield* store.claim({ relayId: "r2", limit: 10, ...lease })
          // a2 waits behind a1 (claimed, still pending); r1's leased rows are skipped.
          expect(second.map((r) => r.message.id)).toEqual(["u2", "c1"])
          expect(yield* store.claim({ relayId: "r3", limit: 10, ...lease })).toEqual([])
          // A failed a1 goes back with a delay: not claimable before it, and a2 still waits behind it.
          const a1 = first[0]!
          const error = new Failure.FailureRecord({ tag: "X", message: "x", classification: "transient", category: "dependency" })
          expect(yield* store.reschedule("r1", a1.id, { attempts: 1, error, delayMillis: 500 })).toBe(true)
          expect(yield* store.claim({ relayId: "r3", limit: 10, ...lease })).toEqual([])
          yield* pass("600 millis")
          const retried = yield* store.claim({ relayId: "r3", limit: 10, ...lease })
          expect(retried.map((r) => [r.message.id, r.attempts])).toEqual([["a1", 1]])
          expect(yield* store.markPublished("r3", [a1.id])).toBe(1)
          expect((yield* store.claim({ relayId: "r3", limit: 10, ...lease })).map((r) => r.message.id)).toEqual(["a2"])
        }))
    } else {
      it.scoped("partitioned claim: a relay reads its partitions in id order; a retrying row holds back its key; another relay gets nothing while the partitions are held", () =>
        Effect.gen(function*() {
          const { store, transaction } = yield* harness.fresh("pclaim")
          yield* transaction(store.appendMessages("t", [raw("a1", "A"), raw("a2", "A"), raw("u1", ""), raw("b1", "B"), raw("u2", ""), raw("c1", "C")]))
          const lease = { leaseMillis: 60_000 }
          const first = yield* store.claim({ relayId: "r1", limit: 3, ...lease })
          expect(first.map((r) => r.message.id)).toEqual(["a1", "a2", "u1"])
          // r1, alone, took every partition; r2 finds none free. (Its registration lapses at once, so r1 does
          // not hand it half of them at its next claim.)
          expect(yield* store.claim({ relayId: "r2", limit: 10, leaseMillis: 1 })).toEqual([])
          // A failed a1 goes back with a delay: not claimable before it, and a2 waits behind it.
          const a1 = first[0]!
          const error = new Failure.FailureRecord({ tag: "X", message: "x", classification: "transient", category: "dependency" })
          expect(yield* store.reschedule("r2", a1.id, { attempts: 1, error, delayMillis: 0 })).toBe(false)
          expect(yield* store.reschedule("r1", a1.id, { attempts: 1, error, delayMillis: 500 })).toBe(true)
          expect((yield* store.claim({ relayId: "r1", limit: 10, ...lease })).map((r) => r.message.id)).toEqual(["u1", "b1", "u2", "c1"])
          yield* pass("600 millis")
          const retried = yield* store.claim({ relayId: "r1", limit: 10, ...lease })
          expect(retried.map((r) => [r.message.id, r.attempts])).toEqual([["a1", 1], ["a2", 0], ["u1", 0], ["b1", 0], ["u2", 0], ["c1", 0]])
          // Only the partition's holder settles its rows.
          expect(yield* store.markPublished("r2", [a1.id])).toBe(0)
          expect(yield* store.markPublished("r1", [a1.id])).toBe(1)
          expect((yield* store.claim({ relayId: "r1", limit: 1, ...lease })).map((r) => r.message.id)).toEqual(["a2"])
        }))
    }

    it.scoped("a relay whose lease expired and was taken over can no longer mark, reschedule, kill or renew the row", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("takeover")
        yield* transaction(store.appendMessages("t", [raw("m1", "K")]))
        const [row] = yield* store.claim({ relayId: "old", limit: 10, leaseMillis: 200 })
        expect(yield* store.claim({ relayId: "new", limit: 10, leaseMillis: 60_000 })).toEqual([])
        yield* pass("300 millis")
        const [taken] = yield* store.claim({ relayId: "new", limit: 10, leaseMillis: 60_000 })
        expect(taken!.id).toBe(row!.id)
        const error = new Failure.FailureRecord({ tag: "X", message: "x", classification: "permanent", category: "unknown" })
        expect(yield* store.markPublished("old", [row!.id])).toBe(0)
        expect(yield* store.reschedule("old", row!.id, { attempts: 1, error, delayMillis: 0 })).toBe(false)
        expect(yield* store.markDead("old", row!.id, { attempts: 1, error, deadLetterPublished: false })).toBe(false)
        expect(yield* store.renew("old", [row!.id], 60_000)).toEqual([])
        expect(yield* store.backlog).toBe(1)
        expect(yield* store.renew("new", [row!.id], 60_000)).toEqual([row!.id])
        expect(yield* store.markPublished("new", [row!.id])).toBe(1)
        expect(yield* store.backlog).toBe(0)
      }))

    if (!harness.partitioned) {
      it.scoped("per key order: a key's next row waits for the previous one's confirmation; other keys do not wait", () =>
        Effect.gen(function*() {
          const { store, transaction } = yield* harness.fresh("order")
          const a1Failures = { left: 2 }
          const recorder = recordingPublisher((_, messages) =>
            messages.some((m) => m.id === "a1") && a1Failures.left-- > 0 ? Effect.fail(transient("broker hiccup")) : Effect.void
          )
          yield* transaction(Outbox.appendMessages("t", [raw("a1", "A"), raw("a2", "A"), raw("b1", "B"), raw("a3", "A"), raw("b2", "B")]))
            .pipe(provideStore(store))
          const relay = yield* makeRelay(store, recorder.layer, { backoffBase: "300 millis" })
          // The first round sees only the heads of A and B.
          const first = yield* relay.round
          expect(first.claimed).toBe(2)
          expect(first.retried).toBe(1)
          expect(recorder.published.map((p) => p.message.id)).toEqual(["b1"])
          yield* startRelay(store, recorder.layer, { backoffBase: "300 millis" })
          yield* settle(store.drained)
          const ids = recorder.published.map((p) => p.message.id)
          expect(ids.filter((id) => id.startsWith("a"))).toEqual(["a1", "a2", "a3"])
          expect(ids.filter((id) => id.startsWith("b"))).toEqual(["b1", "b2"])
          // B went ahead while A was backing off.
          expect(ids.indexOf("b2")).toBeLessThan(ids.indexOf("a1"))
        }))
    } else {
      it.scoped("partitioned per key order: a key's rows go in waves; a failed row stops its key for the round and holds it back until retried; other keys do not wait", () =>
        Effect.gen(function*() {
          const { store, transaction } = yield* harness.fresh("porder")
          const a1Failures = { left: 2 }
          const recorder = recordingPublisher((_, messages) =>
            messages.some((m) => m.id === "a1") && a1Failures.left-- > 0 ? Effect.fail(transient("broker hiccup")) : Effect.void
          )
          yield* transaction(Outbox.appendMessages("t", [raw("a1", "A"), raw("a2", "A"), raw("b1", "B"), raw("a3", "A"), raw("b2", "B")]))
            .pipe(provideStore(store))
          const relay = yield* makeRelay(store, recorder.layer, { backoffBase: "300 millis" })
          // One claim holds all five rows; A stops at a1's failure, B goes on in the next wave.
          const first = yield* relay.round
          expect(first).toMatchObject({ claimed: 5, published: 2, retried: 1, deferred: 2 })
          expect(recorder.published.map((p) => p.message.id)).toEqual(["b1", "b2"])
          // While a1 waits for its retry, A's later rows are not claimed.
          expect(yield* relay.round).toMatchObject({ claimed: 0 })
          yield* startRelay(store, recorder.layer, { backoffBase: "300 millis" })
          yield* settle(store.drained)
          const ids = recorder.published.map((p) => p.message.id)
          expect(ids.filter((id) => id.startsWith("a"))).toEqual(["a1", "a2", "a3"])
          expect(ids.filter((id) => id.startsWith("b"))).toEqual(["b1", "b2"])
        }))
    }

    it.scoped("per key order holds under concurrent appenders and a running relay", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("concurrent")
        const recorder = recordingPublisher(() => Effect.sleep("1 millis"))
        yield* startRelay(store, recorder.layer, { batchSize: 7, linger: "2 millis" })
        // Four appenders, each owning its keys, interleaving their transactions; each key's rows are
        // appended in sequence, so its publish order must be that sequence.
        yield* Effect.forEach([0, 1, 2, 3], (p) =>
          Effect.forEach(Array.from({ length: 15 }, (_, n) => n), (n) =>
            transaction(Outbox.appendMessages("t", [raw(`p${p}-k${n % 3}-${n}`, `p${p}-k${n % 3}`), raw(`u-${p}-${n}`, "")]))
              .pipe(provideStore(store), Effect.zipRight(pass("1 millis"))), { discard: true }), { concurrency: "unbounded", discard: true })
        yield* settle(store.drained)
        const ids = recorder.published.map((p) => p.message.id)
        expect(new Set(ids).size).toBe(4 * 15 * 2)
        for (let p = 0; p < 4; p++) {
          for (let k = 0; k < 3; k++) {
            const seq = ids.filter((id) => id.startsWith(`p${p}-k${k}-`)).map((id) => Number(id.split("-")[2]))
            expect(seq).toEqual([...seq].sort((a, b) => a - b))
            expect(seq.length).toBe(5)
          }
        }
      }))

    it.scoped("per key order holds across topics with three relays, concurrent appenders and failing publishes", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("three")
        // Every fifth publish call fails (transient): rows are retried after a backoff, their keys held back.
        const recorder = recordingPublisher((_, __, call) =>
          call % 5 === 2 ? Effect.fail(transient("broker hiccup")) : Effect.sleep("1 millis")
        )
        for (const relayId of ["one", "two", "three"]) {
          yield* startRelay(store, recorder.layer, { batchSize: 9, linger: "2 millis", relayId })
        }
        yield* Effect.forEach([0, 1, 2, 3], (p) =>
          Effect.forEach(Array.from({ length: 15 }, (_, n) => n), (n) =>
            transaction(Effect.zipRight(
              Outbox.appendMessages(n % 2 === 0 ? "t" : "s", [raw(`p${p}-k${n % 3}-${n}`, `p${p}-k${n % 3}`)]),
              Outbox.appendMessages("t", [raw(`u-${p}-${n}`, "")])
            )).pipe(provideStore(store), Effect.zipRight(pass("1 millis"))), { discard: true }), { concurrency: "unbounded", discard: true })
        yield* settle(store.drained)
        const ids = recorder.published.map((p) => p.message.id)
        expect(new Set(ids).size).toBe(4 * 15 * 2)
        for (let p = 0; p < 4; p++) {
          for (let k = 0; k < 3; k++) {
            const seq = ids.filter((id) => id.startsWith(`p${p}-k${k}-`)).map((id) => Number(id.split("-")[2]))
            expect(seq).toEqual([...seq].sort((a, b) => a - b))
            expect(seq.length).toBe(5)
          }
        }
      }))

    it.scoped("a row that keeps failing is dead: classified FailureRecord, backoff between attempts, copy on the dead-letter topic", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("dead")
        const attemptsAt: Array<number> = []
        const recorder = recordingPublisher((topic, messages) =>
          topic === "t" && messages.some((m) => m.id === "poison")
            ? Effect.zipRight(
              Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => messages.length === 1 && attemptsAt.push(now))),
              Effect.fail(transient("rejected"))
            )
            : topic === "t" && messages.some((m) => m.id === "refused")
            ? Effect.fail(new Failure.PermanentError({ category: "schema", message: "refused for good" }))
            : Effect.void
        )
        yield* transaction(Outbox.appendMessages("t", [raw("ok-1", "K"), raw("poison", "P"), raw("ok-2", "K"), raw("after", "P"), raw("refused", "")]))
          .pipe(provideStore(store))
        yield* startRelay(store, recorder.layer, { maxAttempts: 3, backoffBase: "100 millis" })
        yield* settle(store.drained)
        const onTopic = recorder.published.filter((p) => p.topic === "t").map((p) => p.message.id)
        expect(onTopic).toEqual(expect.arrayContaining(["ok-1", "ok-2", "after"]))
        expect(onTopic).not.toContain("poison")
        const dead = yield* store.deadLetters()
        expect(dead.map((d) => d.messageId)).toEqual(["poison", "refused"])
        const [poison, refused] = dead
        expect(poison!.attempts).toBe(3)
        expect(poison!.deadLetterPublished).toBe(true)
        expect(poison!.error.classification).toBe("transient")
        expect(poison!.error.category).toBe("dependency")
        expect(poison!.error.tag).toBe("PublishError")
        // A permanent failure is not retried.
        expect(refused!.attempts).toBe(1)
        expect(refused!.error.classification).toBe("permanent")
        expect(refused!.error.category).toBe("schema")
        // Exponential backoff: ≥ 100 ms, then ≥ 200 ms between the row's attempts (alone in its batch).
        expect(attemptsAt.length).toBe(3)
        expect(attemptsAt[1]! - attemptsAt[0]!).toBeGreaterThanOrEqual(100)
        expect(attemptsAt[2]! - attemptsAt[1]!).toBeGreaterThanOrEqual(200)
        const copy = recorder.published.find((p) => p.topic === Delivery.deadLetterTopic("t") && p.message.id === "poison")!
        const reason = Delivery.readDeadLetterReason(copy.message.headers)
        expect(reason?.attempts).toBe(3)
        expect(reason?.category).toBe("dependency")
        expect(copy.message.headers[Delivery.DeadLetterHeaders.originTopic]).toBe("t")
        // The key's next row went out only after its predecessor was settled (dead).
        expect(onTopic).toContain("after")
      }))

    it.scoped("a dead-letter copy that cannot be published leaves the row dead with deadLetterPublished false", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("dlqdown")
        const recorder = recordingPublisher(() => Effect.fail(new Failure.PermanentError({ category: "auth", message: "no" })))
        yield* transaction(Outbox.appendMessages("t", [raw("x", "")])).pipe(provideStore(store))
        const relay = yield* makeRelay(store, recorder.layer)
        expect((yield* relay.round).dead).toBe(1)
        const [dead] = yield* store.deadLetters()
        expect(dead!.deadLetterPublished).toBe(false)
        expect(yield* store.backlog).toBe(0)
      }))

    it.scoped("dead rows are listed by topic and requeued by id, by topic or all; the relay then publishes them afresh", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("requeue")
        const refusing = { on: true }
        const recorder = recordingPublisher((topic) =>
          refusing.on && !topic.endsWith(".dlq") ? Effect.fail(new Failure.PermanentError({ category: "auth", message: "key revoked" })) : Effect.void
        )
        yield* transaction(Outbox.appendMessages("ta", [raw("a-1", ""), raw("a-2", "")])).pipe(provideStore(store))
        yield* transaction(Outbox.appendMessages("tb", [raw("b-1", "")])).pipe(provideStore(store))
        const relay = yield* makeRelay(store, recorder.layer)
        expect((yield* relay.round).dead).toBe(3)
        expect((yield* store.deadLetters(100, "ta")).map((d) => d.messageId)).toEqual(["a-1", "a-2"])
        expect((yield* store.deadLetters(100, "tb")).map((d) => d.messageId)).toEqual(["b-1"])
        const [a1] = yield* store.deadLetters(1)
        // The credential is restored: requeue one row, then a topic, then everything left.
        refusing.on = false
        const publishedOn = (topic: string) => recorder.published.filter((p) => p.topic === topic).map((p) => p.message.id)
        expect(yield* store.requeueDead({ ids: [a1!.id] })).toBe(1)
        expect(yield* store.backlog).toBe(1)
        yield* relay.round
        expect(publishedOn("ta")).toEqual(["a-1"])
        expect(yield* store.requeueDead({ ids: [a1!.id] })).toBe(0) // published now, not dead
        expect(yield* store.requeueDead({ topic: "tb" })).toBe(1)
        yield* relay.round
        expect(publishedOn("tb")).toEqual(["b-1"])
        expect(yield* store.requeueDead()).toBe(1)
        yield* relay.round
        expect(publishedOn("ta")).toEqual(["a-1", "a-2"])
        expect(yield* store.deadLetters()).toEqual([])
        expect(yield* store.requeueDead()).toBe(0)
        expect(yield* store.backlog).toBe(0)
      }))

    it.scoped("backlog, lag and their gauges; published rows are deleted after the retention period, dead ones kept", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("observe")
        yield* transaction(Outbox.appendMessages("t", [raw("x1", ""), raw("x2", ""), raw("x3", "")])).pipe(provideStore(store))
        yield* pass("20 millis")
        expect(yield* store.backlog).toBe(3)
        expect(Duration.toMillis(yield* store.lag)).toBeGreaterThan(0)
        yield* Outbox.updateMetrics.pipe(provideStore(store))
        expect((yield* Metric.value(Outbox.backlogGauge)).value).toBe(3)
        expect((yield* Metric.value(Outbox.lagGauge)).value).toBeGreaterThan(0)

        const recorder = recordingPublisher()
        const relay = yield* makeRelay(store, recorder.layer, { retention: "1 hour" })
        expect((yield* relay.round).published).toBe(3)
        expect(yield* store.backlog).toBe(0)
        expect(Duration.toMillis(yield* store.lag)).toBe(0)
        expect(yield* relay.cleanup).toBe(0)
        const eager = yield* makeRelay(store, recorder.layer, { retention: 0 })
        yield* pass("5 millis")
        expect(yield* eager.cleanup).toBe(3)
      }))

    it.scoped("drained waits for the rows committed before it, not for later ones", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("drained")
        yield* transaction(store.appendMessages("t", [raw("d1", "")]))
        const waiting = yield* Effect.fork(store.drained)
        yield* pass("50 millis")
        expect(Option.isNone(yield* Fiber.poll(waiting))).toBe(true)
        const [row] = yield* store.claim({ relayId: "r", limit: 10, leaseMillis: 60_000 })
        yield* transaction(store.appendMessages("t", [raw("d2", "")]))
        yield* store.markPublished("r", [row!.id])
        yield* settle(Fiber.join(waiting))
        expect(yield* store.backlog).toBe(1)
      }))

    it.scoped("two relays on one store never publish a row twice while their leases hold", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("two")
        const recorder = recordingPublisher(() => Effect.sleep("1 millis"))
        const ids = Array.from({ length: 300 }, (_, i) => `m-${i}`)
        yield* startRelay(store, recorder.layer, { batchSize: 17, relayId: "one" })
        yield* startRelay(store, recorder.layer, { batchSize: 23, relayId: "two" })
        for (let i = 0; i < ids.length; i += 50) {
          yield* transaction(Outbox.appendMessages("t", ids.slice(i, i + 50).map((id, j) => raw(id, `k-${(i + j) % 40}`))))
            .pipe(provideStore(store))
        }
        yield* settle(store.drained)
        const got = recorder.published.map((p) => p.message.id)
        expect(got.length).toBe(ids.length)
        expect(new Set(got).size).toBe(ids.length)
      }))

    it.scoped("a relay interrupted mid-batch loses nothing: its lease expires and another relay publishes the rest", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("interrupt")
        const hung = yield* Deferred.make<ReadonlyArray<string>>()
        const recorder = recordingPublisher((_, messages, call) =>
          call === 1 ? Effect.zipRight(Deferred.succeed(hung, messages.map((m) => m.id)), Effect.never) : Effect.void
        )
        const ids = Array.from({ length: 100 }, (_, i) => `m-${i}`)
        yield* transaction(Outbox.appendMessages("t", ids.map((id, i) => raw(id, `k-${i % 30}`)))).pipe(provideStore(store))
        const doomed = yield* startRelay(store, recorder.layer, { batchSize: 20, lease: "300 millis", relayId: "doomed" })
        const inFlight = yield* settle(Deferred.await(hung))
        yield* Fiber.interrupt(doomed)
        expect(yield* store.backlog).toBeGreaterThan(0)
        yield* startRelay(store, recorder.layer, { batchSize: 20, relayId: "heir" })
        yield* settle(store.drained)
        const got = recorder.published.map((p) => p.message.id)
        expect(new Set(got)).toEqual(new Set(ids))
        const seen = new Set<string>()
        const duplicates = got.filter((id) => seen.has(id) || (seen.add(id), false))
        for (const id of duplicates) expect(inFlight).toContain(id)
      }))

    it.scoped("a stopping relay hands back what it holds: a sleeping relay takes over at once, long before the lease", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("handback")
        const { hung, recorder } = yield* firstPublishHangs
        const ids = Array.from({ length: 40 }, (_, i) => `m-${i}`)
        yield* transaction(Outbox.appendMessages("t", ids.map((id, i) => raw(id, `k-${i % 8}`)))).pipe(provideStore(store))
        const long = { lease: "1 hour", pollInterval: "1 hour" } as const
        const first = yield* startRelay(store, recorder.layer, { ...long, relayId: "first" })
        yield* settle(Deferred.await(hung))
        // The heir finds everything held (rows or partitions, for an hour) and goes to sleep.
        yield* startRelay(store, recorder.layer, { ...long, relayId: "heir" })
        yield* pass("500 millis")
        expect(recorder.published).toEqual([])
        yield* Fiber.interrupt(first)
        const stoppedAt = yield* Clock.currentTimeMillis
        yield* settle(store.drained)
        const tookOver = (yield* Clock.currentTimeMillis) - stoppedAt
        expect(new Set(recorder.published.map((p) => p.message.id))).toEqual(new Set(ids))
        expect(tookOver).toBeLessThan(3_000)
      }))

    it.scoped("an append wakes a sleeping relay well before its poll interval", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("wake")
        const recorder = recordingPublisher()
        yield* startRelay(store, recorder.layer, { pollInterval: "1 hour", relayId: "sleepy" })
        yield* transaction(store.appendMessages("t", [raw("first", "")]))
        yield* settle(store.drained)
        // Let the idle relay go to sleep (SQL: register as a sleeper and claim once more).
        yield* pass("300 millis")
        const before = yield* Clock.currentTimeMillis
        yield* transaction(store.appendMessages("t", [raw("wake-up", "")]))
        yield* eventually("the append wakes the relay", Effect.sync(() => recorder.published.length === 2))
        const latency = (yield* Clock.currentTimeMillis) - before
        expect(recorder.published.map((p) => p.message.id)).toEqual(["first", "wake-up"])
        expect(latency).toBeLessThan(2_000)
      }))
    it.scoped("an append whose transaction was still open when the relay fell asleep wakes it once it commits", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("late")
        const recorder = recordingPublisher()
        const inserted = yield* Deferred.make<void>()
        const commit = yield* Deferred.make<void>()
        // The append's INSERT runs before the relay registers as a sleeper (so it sends no notification), and
        // its transaction commits only after the relay has registered, claimed once more and gone to sleep.
        const appending = yield* transaction(
          store.appendMessages("t", [raw("late", "")]).pipe(
            Effect.zipRight(Deferred.succeed(inserted, undefined)),
            Effect.zipRight(Deferred.await(commit))
          )
        ).pipe(Effect.fork)
        yield* settle(Deferred.await(inserted))
        yield* startRelay(store, recorder.layer, { pollInterval: "1 hour", relayId: "sleepy" })
        yield* pass("1 second")
        const before = yield* Clock.currentTimeMillis
        yield* Deferred.succeed(commit, undefined)
        yield* settle(Fiber.join(appending))
        yield* eventually("the relay publishes the late commit", Effect.sync(() => recorder.published.length === 1))
        expect(recorder.published.map((p) => p.message.id)).toEqual(["late"])
        expect((yield* Clock.currentTimeMillis) - before).toBeLessThan(2_000)
      }))
    // The lease allows nine missed beats: on a loaded machine PGlite's statements can hold the event loop.
    it.scoped("heartbeat: a publish that outlasts the lease keeps it, so another relay never publishes those rows", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("heartbeat")
        const slowStarted = yield* Deferred.make<void>()
        const slowDone = yield* Deferred.make<void>()
        const recorder = recordingPublisher((_, __, call) =>
          call === 0
            ? Effect.zipRight(Deferred.succeed(slowStarted, undefined), Effect.sleep("3 seconds")).pipe(
              Effect.ensuring(Deferred.succeed(slowDone, undefined))
            )
            : Effect.void
        )
        const ids = Array.from({ length: 20 }, (_, i) => `m-${i}`)
        yield* transaction(Outbox.appendMessages("t", ids.map((id) => raw(id, id)))).pipe(provideStore(store))
        yield* startRelay(store, recorder.layer, { batchSize: 5, lease: "1 second", heartbeat: "100 millis", relayId: "slow" })
        yield* settle(Deferred.await(slowStarted))
        yield* startRelay(store, recorder.layer, { batchSize: 5, lease: "1 second", heartbeat: "100 millis", relayId: "fast" })
        yield* settle(store.drained)
        // The slow batch is recorded when its publish returns: wait for it before counting.
        yield* settle(Deferred.await(slowDone))
        yield* pass("50 millis")
        const got = recorder.published.map((p) => p.message.id)
        expect(new Set(got)).toEqual(new Set(ids))
        expect(got.length).toBe(ids.length)
      }))

    it.scoped("heartbeat: a killed relay's keys resume within its default lease (at most 5 s)", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("killed")
        const { hung, recorder } = yield* firstPublishHangs
        yield* transaction(Outbox.appendMessages("t", [raw("k1-1", "k1"), raw("k1-2", "k1")])).pipe(provideStore(store))
        const doomed = yield* startRelay(store, recorder.layer, { relayId: "doomed" })
        yield* settle(Deferred.await(hung))
        yield* Fiber.interrupt(doomed)
        const killedAt = yield* Clock.currentTimeMillis
        yield* startRelay(store, recorder.layer, { relayId: "heir" })
        yield* settle(store.drained)
        const resumedAfter = (yield* Clock.currentTimeMillis) - killedAt
        expect(recorder.published.map((p) => p.message.id)).toEqual(["k1-1", "k1-2"])
        expect(resumedAfter).toBeLessThanOrEqual(5_500)
      }))

    it.scoped("heartbeat: a live relay whose renewals fail stops publishing before its lease can be taken", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("cut")
        const cut: OutboxStore.Service = {
          ...store,
          renew: () => Effect.fail(new OutboxStore.OutboxStoreError({ operation: "renew", cause: "store unreachable" }))
        }
        const recorder = recordingPublisher((topic) => topic === "slow" ? Effect.sleep("800 millis") : Effect.void)
        yield* transaction(Outbox.appendMessages("slow", [raw("a", "")])).pipe(provideStore(store))
        yield* transaction(Outbox.appendMessages("later", [raw("b", "")])).pipe(provideStore(store))
        const relay = yield* makeRelay(cut, recorder.layer, { lease: "400 millis", heartbeat: "100 millis", relayId: "cut" })
        const result = yield* settle(relay.round)
        expect(result).toMatchObject({ claimed: 2, published: 1, abandoned: 1 })
        expect(recorder.published.map((p) => p.message.id)).toEqual(["a"])
        // The abandoned row returns once the lease has expired.
        const [again] = yield* store.claim({ relayId: "other", limit: 10, leaseMillis: 60_000 })
        expect(again!.message.id).toBe("b")
      }))
    it.scoped("heartbeat: rows a renewal finds taken over are left to their new holder", () =>
      Effect.gen(function*() {
        const { store, transaction } = yield* harness.fresh("lost")
        // Renewals answer no id: to the relay, every row it is holding was taken over; so its later claims
        // find nothing (a partitioned store's claim would otherwise hand its own partitions' rows back).
        let claims = 0
        const takenOver: OutboxStore.Service = {
          ...store,
          claim: (request) => claims++ === 0 ? store.claim(request) : Effect.succeed([]),
          renew: () => Effect.succeed([])
        }
        const recorder = recordingPublisher((topic) => topic === "slow" ? Effect.sleep("500 millis") : Effect.void)
        yield* transaction(Outbox.appendMessages("slow", [raw("a", "")])).pipe(provideStore(store))
        yield* transaction(Outbox.appendMessages("later", [raw("b", "")])).pipe(provideStore(store))
        const relay = yield* Relay.make({ lease: "10 seconds", heartbeat: "100 millis", relayId: "robbed" }).pipe(
          provideStore(takenOver),
          Effect.provide(recorder.layer)
        )
        const running = yield* relay.run.pipe(Effect.forkScoped)
        yield* eventually("the slow batch is settled", Effect.map(store.backlog, (n) => n <= 1))
        // Time for the round to reach the second topic, which it would publish if the lease were still its.
        yield* settle(Effect.sleep("1 second"))
        yield* Fiber.interrupt(running)
        expect(recorder.published.map((p) => p.message.id)).toEqual(["a"])
      }))
  })
}
