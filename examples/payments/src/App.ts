/**
 * One run of the example, end to end, over whichever database and transport are in context:
 *
 * webhooks → ingress (verify, dedupe, persist) → `payments` → order service (idempotent; order + `OrderPaid`
 * in one transaction) → outbox relay → `order-paid` → shipping (timeout, breaker, retry, idempotency) →
 * dead-letter queue → replay once the shipping API is back.
 *
 * It answers the observations the summary is computed from; it never decides success itself.
 */
import * as SqlAuditLog from "@bulwark/audit/AuditLog/Sql"
import { AuditLog } from "@bulwark/core"
import { DeadLetter, DeadLetterStore, Replay, SqlDeadLetterStore } from "@bulwark/dead-letter"
import { MemoryIdempotencyStore, SqlIdempotencyStore } from "@bulwark/idempotency"
import { Outbox, Relay } from "@bulwark/outbox"
import * as SqlCursorStore from "@bulwark/poll/CursorStore/Sql"
import type { Database } from "@bulwark/sql"
import type { Transport } from "@bulwark/transport"
import { ReplayGuard, Signing } from "@bulwark/webhook"
import * as IdempotencyReplayGuard from "@bulwark/webhook/ReplayGuard/Idempotency"
import type * as SqlClient from "@effect/sql/SqlClient"
import { Clock, Duration, Effect, Layer, Option, Stream } from "effect"
import { randomBytes } from "node:crypto"
import { consumeOrderPaid, consumePayments, makeShippingBreaker } from "./Consumers.js"
import { orderPaidTopic, paymentsTopic } from "./Domain.js"
import * as Load from "./Load.js"
import * as Orders from "./Orders.js"
import * as Polled from "./Polled.js"
import * as Progress from "./Progress.js"
import * as Shipping from "./Shipping.js"
import * as Summary from "./Summary.js"
import * as Tables from "./Tables.js"
import { Tally } from "./Tally.js"
import * as Webhooks from "./Webhooks.js"

/** Settings of one run. */
export interface Options {
  readonly load: Load.LoadOptions
  /** Prefix of every table the run creates. */
  readonly tablePrefix: string
  /** Drop the run's tables at the end (shared databases). */
  readonly dropTables: boolean
  /** The shipping outage: it starts after this share of the expected calls and lasts `duration`. */
  readonly outage: { readonly atShare: number; readonly duration: Duration.DurationInput } | undefined
  /** Every n-th shipment is booked but answered after the attempt timeout. */
  readonly slowEvery: number
  readonly progress: Progress.Mode
  /** The longest the run waits for the pipeline to settle after the last webhook. */
  readonly settleTimeout: Duration.DurationInput
  /**
   * Where the payments' idempotency keys live. `sql` (beside the orders) whenever the database outlives
   * the process; with PGlite in memory nothing does, and `memory` spares the embedded database two
   * statements per payment.
   */
  readonly idempotency: "sql" | "memory"
  /** How the run is wired, for the summary's headline. */
  readonly setup: string
  /** Called each time a webhook got its final answer, with the count so far (the soak samples the heap). */
  readonly onWebhookDone?: (finished: number) => void
  /** Bank transfers booked while the run goes on (the polled source), one every `everyMillis`. */
  readonly bank: { readonly total: number; readonly everyMillis: number }
}

/** The defaults behind `npm start`. */
export const defaults: Options = {
  load: Load.defaultLoad,
  tablePrefix: "payments",
  dropTables: false,
  outage: { atShare: 0.3, duration: "3 seconds" },
  slowEvery: 97,
  progress: "off",
  settleTimeout: "45 seconds",
  idempotency: "memory",
  setup: "PGlite in memory, memory transport",
  bank: { total: 150, everyMillis: 10 }
}

/** The dead-letter categories the run replays once the shipping API is healthy again. */
export const replayableCategories: ReadonlySet<string> = new Set(["dependency", "timeout"])

const decoder = new TextDecoder()

/** The order an `OrderPaid` payload is about (dead-letter entries keep the CloudEvents bytes). */
const orderIdOf = (payload: Uint8Array): string | undefined => {
  try {
    const event = JSON.parse(decoder.decode(payload)) as { data?: { orderId?: unknown } }
    return typeof event.data?.orderId === "string" ? event.data.orderId : undefined
  } catch {
    return undefined
  }
}

const toDeadLetter = (entry: DeadLetterStore.DeadLetterEntry): Summary.DeadLetter => ({
  messageId: entry.messageId,
  originTopic: entry.originTopic,
  category: entry.category,
  orderId: orderIdOf(entry.payload)
})

/** Polls `done` until it holds or `timeout` passes; answers whether it held. */
const waitFor = <E, R>(done: Effect.Effect<boolean, E, R>, timeout: Duration.DurationInput) => {
  const poll: Effect.Effect<true, E, R> = Effect.flatMap(done, (ok) =>
    ok ? Effect.succeed(true as const) : Effect.zipRight(Effect.sleep(Duration.millis(25)), Effect.suspend(() => poll)))
  return Effect.map(Effect.timeoutOption(poll, timeout), Option.isSome)
}

/**
 * One event's whole story from the audit log: a payment whose `OrderPaid` was dead-lettered and replayed
 * when there is one (the longest story), else the first payment accepted.
 */
const pickTimeline = Effect.gen(function*() {
  const log = yield* AuditLog.AuditLog
  const replayed = (yield* log.query({ stage: "replayed", limit: 100 })).find((p) => p.entry.outcome === "republished")
  let root: string | undefined
  if (replayed !== undefined) {
    root = (yield* log.timeline(replayed.entry.eventId)).find((e) => e.causationId !== undefined)?.causationId
  }
  if (root === undefined) {
    root = (yield* log.query({ stage: "received", limit: 100 })).find((p) => p.entry.outcome === "accepted")?.entry.eventId
  }
  if (root === undefined) return undefined
  return { eventId: root, entries: yield* AuditLog.story(root) }
}).pipe(
  Effect.catchTag("AuditLogError", (error) => Effect.as(Effect.logWarning("could not read the audit log", error), undefined))
)

/** Runs the example once over the database and transport in context. */
export const run = (options: Options) =>
  Effect.gen(function*() {
    const startedAt = yield* Clock.currentTimeMillis
    const tables = yield* Tables.tablesFor(options.tablePrefix)
    const load = Load.plan(options.load)
    // Fresh secrets per run: the providers and the ingress share them, nobody else does.
    const secrets: Webhooks.Secrets = {
      acmepay: [Signing.generateSecret()],
      stripe: [`whsec_${randomBytes(24).toString("hex")}`]
    }
    const shipping = Shipping.layerFlaky({
      latency: "1 millis",
      undeliverable: (orderId) => load.undeliverable.has(orderId),
      slowEvery: options.slowEvery,
      ...(options.outage === undefined ? {} : {
        outage: { afterCalls: Math.max(1, Math.floor(load.payments * options.outage.atShare)), duration: options.outage.duration }
      })
    })
    // Where the payments' idempotency keys live; on a database that outlives the process the ingress's
    // dedupe of webhook ids lives there too (as it must with several ingress instances), instead of in a
    // map of every id seen for the 3-day dedupe window.
    const idempotency = options.idempotency === "sql"
      ? Layer.provideMerge(IdempotencyReplayGuard.layer(), SqlIdempotencyStore.layer({ table: tables.idempotency }))
      : Layer.merge(MemoryIdempotencyStore.layer(), ReplayGuard.layerMemory())
    const services = Layer.mergeAll(
      Orders.layerSql(tables),
      idempotency,
      SqlDeadLetterStore.layer({ table: tables.deadLetters }),
      Tally.layer,
      shipping,
      Relay.layer({ batchSize: 500 }),
      SqlCursorStore.layer({ table: tables.pollCursors })
    ).pipe(
      // The defaults suit this load: appends notify only while the relay sleeps, and a busy relay gathers
      // its batches (linger), so the burst of webhooks costs neither a NOTIFY per commit nor batches of one.
      Layer.provideMerge(Outbox.layer({ table: tables.outbox })),
      // Every package writes what happens to each event here, the relay's background fiber included (so it is
      // provided beneath the other services, not beside them); the payment webhooks' messages are kept, so
      // `bulwark history replay` can republish them.
      Layer.provideMerge(SqlAuditLog.layer({ table: tables.audit, keepMessages: [paymentsTopic] }))
    )

    const observe = Effect.gen(function*() {
      const counters = yield* Tally
      const records = yield* Shipping.ShippingProvider
      const store = yield* DeadLetterStore.DeadLetterStore
      yield* Orders.seed(tables, load.orders)

      const breaker = yield* makeShippingBreaker
      let breakerOpened = 0
      yield* breaker.transitions.pipe(
        Stream.runForEach((transition) =>
          Effect.sync(() => {
            if (transition.to === "open") breakerOpened++
          })
        ),
        Effect.forkScoped
      )
      const bank = yield* Polled.serveBank(options.bank)
      // The consumers and dead-letter drains never end on their own; if one fails, the run fails with it.
      const workers = Effect.all([
        Effect.scoped(Polled.pollBank(bank)),
        Polled.consumeTransfers,
        consumePayments,
        // Shipping's duplicates are few and the API absorbs them by Idempotency-Key anyway: an in-process
        // store spares the embedded database two statements per event. A duplicate arrives within seconds
        // of its original, so the store keeps the last 10 000 keys rather than a week of them; one older than
        // that would be booked again by its key, which the API answers with the parcel it already booked.
        Effect.provide(consumeOrderPaid(breaker), MemoryIdempotencyStore.layer({ maxEntries: 10_000 })),
        DeadLetter.drain(paymentsTopic),
        DeadLetter.drain(orderPaidTopic)
      ], { concurrency: "unbounded", discard: true })

      const report = new Load.LoadReport()
      let phase = "sending"
      let replayTotal = 0
      let replayDone = 0
      const snapshot = (): Progress.Snapshot => {
        const detail = `paid ${counters.ordersPaid.size} · shipped ${records.bookings.length} · ` +
          `dead-lettered ${[...counters.deadLettered.values()].reduce((a, b) => a + b, 0)}`
        switch (phase) {
          case "sending":
            return { phase, done: report.finished, total: load.webhooks.length, detail }
          case "settling":
            return { phase, done: counters.orderPaidSettled.size, total: Math.max(1, counters.ordersPaid.size), detail }
          default:
            return { phase, done: replayDone, total: replayTotal, detail }
        }
      }

      const main = Effect.gen(function*() {
        const server = yield* Webhooks.serve(secrets)
        yield* Effect.forkScoped(Progress.report(options.progress, snapshot))
        yield* Load.send(server.url, secrets, load, options.load.concurrency, report, options.onWebhookDone)

        phase = "settling"
        const deadLettered = () => [...counters.deadLettered.values()].reduce((a, b) => a + b, 0)
        const settled = yield* waitFor(
          Effect.gen(function*() {
            if (counters.paymentsSettled.size < report.accepted) return false
            if ((yield* Outbox.backlog) > 0) return false
            let paid = 0
            for (const n of counters.ordersPaid.values()) paid += n
            if (counters.orderPaidSettled.size < paid) return false
            return (yield* store.depth) >= deadLettered()
          }),
          options.settleTimeout
        )
        const deadLetters = (yield* store.list({})).map(toDeadLetter)

        // Replaying into a live outage would only dead-letter the messages again.
        const outage = records.outage
        const now = yield* Clock.currentTimeMillis
        if (outage !== undefined && now < outage.until) yield* Effect.sleep(Duration.millis(outage.until - now))
        phase = "replaying"
        // Outage and timeout failures are the provider's, and over by now. A timed-out call may even have
        // booked the parcel: the replay is safe because the API answers a repeated Idempotency-Key with it.
        // A replayed call can time out again although the API booked it (a slow answer): its copy is
        // dead-lettered anew. Replaying it once more gets the booking back by its Idempotency-Key, so the
        // replay goes round until only poison is left (three rounds at most).
        let replayedCount = 0
        let replaySettled = true
        let doneBefore = 0
        for (let round = 0; round < 3; round++) {
          const replayable = (yield* store.list({ originTopic: orderPaidTopic, replay: "pending" }))
            .filter((entry) => replayableCategories.has(entry.category))
          if (replayable.length === 0) break
          replayTotal += replayable.length
          const replay = yield* Replay.replay({ ids: replayable.map((e) => e.id), rate: 1000 })
          replayedCount += replay.replayed.length
          const replayedIds = new Set(replay.replayed)
          const replayedMessages = replayable.filter((e) => replayedIds.has(e.id))
          replaySettled = yield* waitFor(
            Effect.gen(function*() {
              // Done once the replayed copy's delivery settled (acked, or dead-lettered again), not merely once
              // the parcel is booked: a booked call can still time out and dead-letter its copy.
              let done = 0
              for (const entry of replayedMessages) {
                if (counters.orderPaidSettled.has(Replay.replayMessageId(entry.messageId, entry.replayCount + 1))) done++
                else {
                  const current = yield* store.get(entry.id)
                  if (current._tag === "Some" && current.value.replay === "pending") done++
                }
              }
              replayDone = doneBefore + done
              return done === replayedMessages.length
            }),
            options.settleTimeout
          )
          doneBefore = replayDone
          if (!replaySettled) break
          // A copy dead-lettered again lands in the store through the drain: let it arrive before looking.
          // Counted over every entry, replayed ones included (the depth leaves them out, so it can never
          // catch up with the drain's count once anything was replayed).
          yield* waitFor(Effect.map(store.list({}), (entries) => entries.length >= deadLettered()), options.settleTimeout)
        }
        const remaining = (yield* store.list({ replay: "pending" })).map(toDeadLetter)
        // The bank stops booking; every transfer's latest version must come through the poller.
        yield* bank.stop
        const polledSettled = yield* waitFor(
          Effect.sync(() => bank.current().every((v) => counters.transfersReceived.has(`bank:${v}`))),
          options.settleTimeout
        )
        return { settled: settled && replaySettled && polledSettled, deadLetters, replayed: replayedCount, remaining }
      }).pipe(Effect.scoped)

      const outcome = yield* Effect.raceFirst(
        main,
        Effect.zipRight(workers, Effect.dieMessage("a consumer stopped although nobody stopped it"))
      )
      const paidRows = yield* Orders.paidOrders(tables)
      const timeline = yield* pickTimeline
      return {
        setup: options.setup,
        durationMillis: (yield* Clock.currentTimeMillis) - startedAt,
        settled: outcome.settled,
        planned: load.webhooks.length,
        expectedPaid: new Set(load.paidOrders),
        undeliverable: load.undeliverable,
        load: report,
        counters,
        shipping: records,
        ordersByStatus: yield* Orders.countByStatus(tables),
        paidInDatabase: new Set(paidRows),
        deadLetters: outcome.deadLetters,
        replayed: outcome.replayed,
        remaining: outcome.remaining,
        breakerOpened,
        polled: { versions: bank.versions, latest: bank.current() },
        timeline
      } satisfies Summary.Observations
    }).pipe(Effect.scoped)

    const cleanUp = options.dropTables
      ? Tables.drop(tables).pipe(
        Effect.catchAll((error) => Effect.logError(`could not drop the run's tables (prefix ${tables.prefix})`, error))
      )
      : Effect.void
    return yield* observe.pipe(Effect.provide(services), Effect.ensuring(cleanUp))
  })

/** What a run needs from outside: a database and a transport. */
export type Platform = SqlClient.SqlClient | Database.Database | Transport.Publisher | Transport.Subscriber
