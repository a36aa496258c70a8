/**
 * A polling source on the real `@bulwark/poll`: the source system only exposes `GET /payments?since=…&limit=3`
 * (no webhooks), and two poller processes compete for it through a lease in the memory cursor store, which
 * lives in the world's database beside the outbox. Each page's outbox rows and its cursor commit in one
 * transaction; the relay publishes the rows; a consumer applies each payment downstream once, behind the
 * idempotency middleware, with the envelope id as the downstream's idempotency key.
 *
 * The simulated provider's webhooks stand for the writes other systems make to the source: each one stores a
 * payment in the source API (durable, stamped with the time of the write), and its acknowledgement means
 * "it is in the source": from then on it must reach the downstream exactly once in effect.
 *
 * The source's own faults, through the world's `faultSites`: `delay` makes a write visible late (a commit
 * that lands after later ones, stamped earlier: reordering in time, within the overlap the poller reads
 * again), `slow` slows a page, `reorder` answers a page out of order. `crash` kills any process at any step,
 * between the fetch, the publish and the cursor save included; it restarts with its memory lost.
 *
 * Its wrong twins are the configurations users get wrong: keeping the source's progress by hand, saved as
 * soon as a page is read (before its items are published: a crash in between loses the page), and item ids
 * minted per read instead of derived from the item (the overlap's re-reads and a crashed poller's second
 * read become new events, applied twice).
 */
import { Handler } from "@bulwark/core"
import { Idempotent } from "@bulwark/idempotency"
import { Relay } from "@bulwark/outbox"
import { Poller, Source } from "@bulwark/poll"
import { CursorStore, type Service as CursorStoreService } from "@bulwark/poll/CursorStore"
import * as MemoryCursorStore from "@bulwark/poll/CursorStore/Memory"
import { Backoff, Retry } from "@bulwark/retry"
import { consume } from "@bulwark/transport/Transport"
import { Clock, Duration, Effect, Option, Schema } from "effect"
import * as Invariant from "../src/Invariant.js"
import type * as Scenario from "../src/Scenario.js"
import * as Simulation from "../src/Simulation.js"
import type { DownstreamError, Ingress, World } from "../src/World.js"
import { type Entry, only } from "./catalogue.js"

/** A payment as the source API lists it. */
export const Payment = Schema.Struct({
  ref: Schema.String,
  key: Schema.String,
  amount: Schema.Number,
  poison: Schema.Boolean,
  updatedAt: Schema.Number
})
type Payment = typeof Payment.Type

/** The choices; the defaults are the correct ones. */
export interface Variant {
  /**
   * Where the source's progress is kept: the poller's cursor, saved with the page's outbox rows, or a
   * progress record the fetch keeps itself and saves as soon as it has read a page (bug).
   */
  readonly progress: "poller-cursor" | "saved-on-read"
  /** The items' ids: derived from the item (its key and version), or minted per read (bug). */
  readonly ids: "from-item" | "per-read"
}

const correct: Variant = { progress: "poller-cursor", ids: "from-item" }

const topic = "payments.polled"
const source = "payments"
/** How far back each poll reaches before the newest time seen. */
const overlapMillis = 2_000
/** Late commits land within this much of their stamp (inside the overlap: what the poller can see). */
const lateMillis = 1_500

/** The source sites the world moves the source's faults to. */
export const faultSites = { delay: "source-write", slow: "source-page", reorder: "source-page" } as const

const request = (world: World, rows: Map<string, Payment & { readonly visibleAt: number }>) =>
(url: string): Effect.Effect<Source.Response, Source.HttpError> =>
  Effect.gen(function*() {
    yield* world.step
    const query = new URL(url).searchParams
    const since = query.get("since")
    const from = since === null ? Number.NEGATIVE_INFINITY : Date.parse(since)
    const limit = Number(query.get("limit") ?? "1000")
    const faults = world.faultsAt("source-page")
    const slow = faults.find((f) => f.kind === "slow")
    if (slow !== undefined && slow.kind === "slow") {
      world.history.fault("slow", undefined, { site: "source-page", ms: slow.ms })
      yield* Effect.sleep(Duration.millis(slow.ms))
    }
    // Read when the answer is made (after a slow start): what is visible now, oldest first, at most `limit`.
    const now = yield* Clock.currentTimeMillis
    const page = [...rows.values()]
      .filter((p) => p.visibleAt <= now && p.updatedAt >= from)
      .sort((a, b) => a.updatedAt - b.updatedAt || (a.ref < b.ref ? -1 : 1))
      .slice(0, limit)
      .map(({ visibleAt: _, ...payment }) => payment)
    if (faults.some((f) => f.kind === "reorder")) {
      world.history.fault("reorder", undefined, { site: "source-page", items: page.length })
      page.reverse()
    }
    world.history.record("node", "source-page", undefined, { items: page.length, since: since ?? "-" })
    return { status: 200, headers: {}, body: { items: page } }
  })

/** Each call of the store a step of the calling process, as every call into the world is. */
const stepped = (world: World, store: CursorStoreService): CursorStoreService => ({
  ...store,
  load: (s) => Effect.zipRight(world.step, store.load(s)),
  acquire: (s, holder, lease) => Effect.zipRight(world.step, store.acquire(s, holder, lease)),
  renew: (s, holder, lease) => Effect.zipRight(world.step, store.renew(s, holder, lease)),
  release: (s, holder) => Effect.zipRight(world.step, store.release(s, holder)),
  save: (s, holder, cursor) => Effect.zipRight(world.step, store.save(s, holder, cursor))
})

/** Builds the pipeline for a variant inside the simulated world. */
export const pipeline = (overrides: Partial<Variant> = {}) => (world: World) => {
  const v: Variant = { ...correct, ...overrides }
  const rows = world.table<Payment & { readonly visibleAt: number }>("source-api")

  // --- the source system: writes arrive as the provider's requests -----------------------------------------
  const decoder = new TextDecoder()
  let lastStamp = 0
  const ingress: Ingress = (req) =>
    Effect.gen(function*() {
      const body = JSON.parse(decoder.decode(req.body)) as { ref: string; key: string; amount: number; poison: boolean }
      // A retried write is the same write: the source keeps its first version.
      if (!rows.has(body.ref)) {
        // Distinct stamps, as a database's microsecond clock gives: the `since` adapter cannot page through
        // more than `limit` items stamped at the very same instant (its documented limit).
        const now = Math.max(yield* Clock.currentTimeMillis, lastStamp + 1)
        lastStamp = now
        const late = world.faultsAt("source-write").find((f) => f.kind === "delay")
        const lateBy = late !== undefined && late.kind === "delay" ? late.ms % lateMillis : 0
        if (lateBy > 0) world.history.fault("delay", body.ref, { site: "source-write", visibleAfter: lateBy })
        rows.set(body.ref, { ...body, updatedAt: now, visibleAt: now + lateBy })
      }
      return 200
    })

  // --- the fetch: the real `since` adapter over the simulated API ------------------------------------------
  let readAt = 0
  const api = request(world, rows)
  const since = Source.since({
    url: "http://source.simulated/payments",
    schema: Payment,
    // The bug: an id minted per read (the read's time), so the same payment read twice is two events.
    key: (p) => v.ids === "from-item" ? p.ref : `${p.ref}~${readAt}`,
    time: (p) => p.updatedAt,
    overlap: Duration.millis(overlapMillis),
    limit: 3,
    request: (url) => Effect.flatMap(Clock.currentTimeMillis, (now) => {
      readAt = now
      return api(url)
    })
  })
  // The bug: progress kept by hand, saved as soon as the page is read; the poller's cursor is ignored.
  const progress = world.table<string>("hand-kept-progress")
  const fetch: Source.FetchPage<Payment, Source.HttpError> = v.progress === "poller-cursor" ? since : () =>
    Effect.gen(function*() {
      const page = yield* since(Option.fromNullable(progress.get(source)))
      yield* world.step
      if (page.next !== undefined) progress.set(source, page.next)
      return page
    })

  const poller = Poller.run({
    name: source,
    topic,
    type: "payment.changed",
    schema: Payment,
    fetch,
    interval: "500 millis",
    lease: "3 seconds",
    retry: Retry.policy({ maxAttempts: 3, schedule: Backoff.exponential({ base: "100 millis", cap: "1 second" }) })
  })

  // --- the consumer: each payment applied downstream once ---------------------------------------------------
  const apply: Handler.Handler<Payment, DownstreamError> = (envelope) =>
    world.callDownstream({
      ref: envelope.data.ref,
      key: envelope.data.key,
      order: world.orderOf(topic, envelope.id),
      idempotencyKey: envelope.id
    })
  const handler = Idempotent.idempotent<Payment>({ namespace: "payments:", lease: "30 seconds", retention: "1 hour", onInProgress: "nack" })(
    Handler.timeout("2 seconds")(apply)
  )

  return Effect.gen(function*() {
    // Durable: the store lives in the world's database and outlives every process.
    const cursors = stepped(world, yield* Effect.provide(MemoryCursorStore.make, world.context))
    for (let i = 0; i < 2; i++) {
      yield* world.spawn(
        `poller-${i + 1}`,
        poller.pipe(Effect.provideService(CursorStore, cursors), Effect.provide(world.context))
      )
    }
    yield* world.spawn("relay", Effect.provide(Relay.run({ batchSize: 10, pollInterval: "1 second", relayId: "relay" }), world.context))
    yield* world.spawn(
      "consumer",
      Effect.provide(Effect.orDie(consume(topic, handler, { schema: Payment, group: "consumer", concurrency: 4, maxAttempts: 8 })), world.context)
    )
    return ingress
  })
}

/** What these simulations hold the poller to. */
export const invariants: ReadonlyArray<Invariant.Invariant> = [
  Invariant.noLoss,
  Invariant.noUnexpected,
  Invariant.noDuplicateEffects,
  Invariant.processRuns,
  Invariant.liveness
]

const simulation = (name: string, variant: Partial<Variant>, workload: Scenario.Config) =>
  Simulation.make({
    name,
    pipeline: pipeline(variant),
    workload: { poisonRate: 0, ...workload },
    policy: { maxDeliveries: 8 },
    world: { faultSites },
    livenessBound: 30_000,
    invariants
  })

const entry = (id: string, bug: string, caughtBy: ReadonlyArray<string>, workload: Scenario.Config, variant: Partial<Variant>): Entry => ({
  id,
  bug,
  caughtBy,
  wrong: simulation(`${id} (wrong)`, variant, workload),
  twin: simulation(`${id} (twin)`, {}, workload)
})

/** Every fault the poller must live with: late commits, slow and reordered pages, crashes and restarts. */
export const sourceFaults = only({ crash: 3, delay: 1, slow: 1, reorder: 1 })

/** The correct poller under every source fault, for a longer check than the catalogue's twins. */
export const correctPoller = simulation("poller (correct)", {}, { maxFaults: 6, weights: sourceFaults })

/** The wrong polling configurations, each beside its correct twin. */
export const catalogue: ReadonlyArray<Entry> = [
  entry(
    "progress-saved-on-read",
    "keeps the source's progress by hand and saves it as soon as a page is read, before its items are published: a crash in between loses the page",
    ["no-lost", "liveness"],
    { maxFaults: 3, weights: only({ crash: 1 }) },
    { progress: "saved-on-read" }
  ),
  entry(
    "ids-minted-per-read",
    "gives each polled item an id minted per read instead of one derived from the item, so a re-read (the overlap, a crashed poller's second read) is a new event",
    ["no-duplicate-effects"],
    { maxFaults: 3, weights: only({ crash: 1, delay: 1 }) },
    { ids: "per-read" }
  )
]
