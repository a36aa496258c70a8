import { Supervise } from "@bulwark/core"
import type { Database } from "@bulwark/sql"
import type * as SqlClient from "@effect/sql/SqlClient"
import { Clock, type Context, Deferred, Duration, Effect, Queue, Schedule, type Scope, Stream } from "effect"
import type { Wakeup } from "../OutboxStore.js"

/** What the SQL wake-up of one relay needs. */
export interface SqlWakeupOptions {
  readonly sql: SqlClient.SqlClient
  readonly db: Context.Tag.Service<Database.Database>
  /** The channel appends NOTIFY on. */
  readonly channel: string
  readonly sleepersTable: string
  /** Whether appends read the sleepers table (`notify: true`), so the relay must register to be woken. */
  readonly registers: boolean
  readonly relayId: string
  readonly pollInterval: Duration.Duration
  /**
   * Whether a transaction still writing to the outbox began before `before` (server time; the statement's own
   * time when undefined), with the statement's time.
   */
  readonly appendsInFlight?: (
    before: string | undefined
  ) => Effect.Effect<{ readonly at: string | undefined; readonly busy: boolean }, unknown>
}

// While appends that may have missed the registration are still open, the relay looks again: first after
// `recheckMillis`, then twice as long each time, up to `recheckMaxMillis`. Such an append commits soon after
// the registration, as a rule, but a long business transaction may stay open for minutes, and a check every
// 50 ms all that while (a claim and a look at the open transactions each time) is load for nothing.
const recheckMillis = 50
const recheckMaxMillis = 1_000

/**
 * LISTEN/NOTIFY wake-up with sleeper registration. A relay whose claim finds nothing registers in the
 * sleepers table, claims once more, and waits; `append` notifies only while some relay is registered. After
 * two rounds in a row that found rows it deregisters, so under load appends send no notifications (Postgres
 * serialises notifying commits). The relay registers only once it has heard its own probe on the channel:
 * registered but not yet listening, it would miss the very notifications its registration asks for.
 */
export const sqlWakeup = (options: SqlWakeupOptions): Effect.Effect<Wakeup, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { appendsInFlight, channel, db, pollInterval, registers, relayId, sql, sleepersTable } = options
    // A wake-up only says "something committed since the last claim", so one slot is enough: a burst of
    // notifications while a round runs folds into a single extra claim instead of one per notification.
    const wake = yield* Queue.sliding<void>(1)
    const probe = `probe:${relayId}`
    const listening = yield* Deferred.make<void>()
    // Logged when LISTEN breaks and when a notification arrives again, not at every retry of an outage.
    const listenFailed = Supervise.changes("outbox relay: LISTEN failed; polling until it is back")
    yield* db.listen(channel).pipe(
      Stream.tap(() => listenFailed.ok),
      // Hearing its own probe also wakes the relay: one whose LISTEN was confirmed late is waiting a whole poll
      // interval, unregistered, so no append would notify it; the extra round registers it.
      Stream.runForEach((payload) =>
        payload === probe
          ? Effect.zipRight(Deferred.succeed(listening, undefined), Queue.offer(wake, undefined))
          : Queue.offer(wake, undefined)
      ),
      Effect.tapError(listenFailed.failed),
      Effect.retry(Schedule.spaced("1 second")),
      Effect.forkScoped
    )

    const registerText = `INSERT INTO "${sleepersTable}" (relay_id) VALUES ($1) ON CONFLICT (relay_id) DO UPDATE SET since = now()`
    const deregisterText = `DELETE FROM "${sleepersTable}" WHERE relay_id = $1`
    const register = Effect.asVoid(sql.unsafe(registerText, [relayId]))
    const deregister = Effect.asVoid(sql.unsafe(deregisterText, [relayId]))

    let asleep = false
    let registeredAt = 0
    let busyRounds = 0
    // An append whose INSERT read the sleepers table before the registration committed sends no NOTIFY, and
    // commits, maybe later than the claim made after registering: until no transaction that began before the
    // registration still writes to the outbox, the relay looks again every `recheckMillis` instead of sleeping.
    // `since` is the server time of the first check (after the registration committed).
    let unsure = false
    let since: string | undefined
    let recheckDelay = recheckMillis
    // Deregisters even when not known to be asleep: an interrupted registration may still have landed.
    // Interruptible, so that the bound holds in the finalizer's uninterruptible region against a hung database.
    if (registers) yield* Effect.addFinalizer(() => deregister.pipe(Effect.interruptible, Effect.timeout("1 second"), Effect.ignore))
    const setAsleep = (value: boolean) =>
      (value ? register : deregister).pipe(
        Effect.zipRight(Clock.currentTimeMillis),
        Effect.map((now) => {
          if (value && !asleep) {
            unsure = appendsInFlight !== undefined
            since = undefined
            recheckDelay = recheckMillis
          }
          if (!value) unsure = false
          asleep = value
          registeredAt = now
          return true
        }),
        Effect.tapError((e) => Effect.logWarning("outbox relay: could not update its sleeper registration", e)),
        Effect.orElseSucceed(() => false)
      )
    // One probe; true once the relay has heard one. A failed NOTIFY still waits, so retries are spaced.
    const probeOnce = (wait: Duration.DurationInput) =>
      db.notify(channel, probe).pipe(
        Effect.ignore,
        Effect.zipRight(Deferred.await(listening).pipe(Effect.timeout(wait))),
        Effect.isSuccess
      )
    if (registers) {
      // LISTEN is normally up within milliseconds: wait for it (up to 1 s) before the first claim, so the
      // relay does not fall asleep deaf. Without it the relay only polls, and keeps probing in the background.
      let heard = false
      for (let attempt = 0; attempt < 50 && !heard; attempt++) heard = yield* probeOnce("20 millis")
      if (!heard) {
        yield* Effect.logWarning("outbox relay: LISTEN not confirmed; polling until it is")
        // Probed again every second at most: a probe sent before LISTEN was up is lost, and waiting a whole
        // poll interval (an hour, for some) for the next one would keep the relay deaf that long.
        yield* probeOnce(Duration.min(Duration.decode(pollInterval), Duration.seconds(1))).pipe(
          Effect.repeat({ until: (heard) => heard }),
          Effect.forkScoped
        )
      }
    }

    // Two rounds in a row with rows: the relay will keep claiming by itself, so appends need not notify.
    const found = Effect.suspend(() => asleep && ++busyRounds >= 2 ? Effect.asVoid(setAsleep(false)) : Effect.void)
    const idle = Effect.gen(function*() {
      busyRounds = 0
      // Appends that committed while the relay was not registered sent no notification: claim once more.
      if (registers && !asleep && (yield* Deferred.isDone(listening)) && (yield* setAsleep(true))) return true
      // A sleeper refreshes its registration when it is over 30 s old (an idle relay polls at least once a
      // minute); cleanup removes entries older than five minutes, left by relays that died asleep.
      if (asleep && (yield* Clock.currentTimeMillis) - registeredAt > 30_000) yield* setAsleep(true)
      if (asleep && unsure && appendsInFlight !== undefined) {
        // A failed check leaves the relay unsure: it looks again soon.
        const open = yield* Effect.option(appendsInFlight(since))
        if (open._tag === "Some") {
          since ??= open.value.at
          unsure = open.value.busy
          // None is open any more, but one may have committed after the last claim: claim once more.
          if (!unsure) return true
        }
      }
      return false
    })
    const wait = (timeout: Duration.Duration) =>
      Effect.suspend(() => {
        if (!unsure) return Queue.take(wake).pipe(Effect.timeout(timeout), Effect.ignore)
        const recheck = Duration.millis(recheckDelay)
        recheckDelay = Math.min(recheckDelay * 2, recheckMaxMillis)
        return Queue.take(wake).pipe(Effect.timeout(Duration.min(timeout, recheck)), Effect.ignore)
      })
    return { found, idle, wait }
  })
