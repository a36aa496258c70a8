import { Failure } from "@bulwark/core"
import type { Transport } from "@bulwark/transport"
import { Clock, type Context, Deferred, Duration, Effect, FiberId, Option, Queue } from "effect"
import type { MemoryOutboxStoreService, MemoryTransaction, Row } from "../OutboxStore/Memory.js"
import { type ClaimedRow, type DeadRow, OutsideTransaction, type Service, type Wakeup } from "../OutboxStore.js"

interface MutableRow {
  id: number
  topic: string
  message: Transport.OutgoingMessage
  createdAt: number
  attempts: number
  state: "pending" | "published" | "dead"
  availableAt: number
  claimedBy: string | undefined
  claimedUntil: number | undefined
  publishedAt: number | undefined
  lastError: Failure.FailureRecord | undefined
  deadLetterPublished: boolean | undefined
}

interface Staged {
  readonly topic: string
  readonly message: Transport.OutgoingMessage
  readonly createdAt: number
}

/** One open transaction: what commits if it succeeds. */
interface Tx {
  readonly owner: object
  /** False once committed or rolled back: a fiber that outlived it (forked inside) cannot append to it. */
  open: boolean
  readonly staged: Array<Staged>
  readonly commits: Array<() => void>
}

const transactions = new WeakMap<object, Tx>()

const noRecord = (message: string) =>
  new Failure.FailureRecord({ tag: "Unknown", message, classification: "permanent", category: "unknown" })

/**
 * The memory store's state and operations. Every operation is one synchronous step after reading the
 * `Clock`, so it is atomic with respect to other fibers, as one SQL statement is.
 */
export const makeMemoryStore = (
  name: string,
  TransactionTag: typeof MemoryTransaction,
  partitioned = false
): MemoryOutboxStoreService => {
  const owner = {}
  // Every kept row in id order, and the pending ones in id order (ids grow at commit, and a Map iterates in
  // insertion order), so a claim walks the pending rows oldest first, as the SQL claim's ORDER BY id.
  const rows = new Map<number, MutableRow>()
  const pending = new Map<number, MutableRow>()
  let nextId = 0
  const lock = Effect.unsafeMakeSemaphore(1)
  const wakers = new Set<Queue.Queue<void>>()
  // Settlements complete the current generation and start a new one, so `drained` waits without polling.
  let settledSignal = Deferred.unsafeMake<void>(FiberId.none)
  const settled = () => {
    Deferred.unsafeDone(settledSignal, Effect.void)
    settledSignal = Deferred.unsafeMake<void>(FiberId.none)
  }

  const commit = (tx: Tx) =>
    Effect.sync(() => {
      for (const f of tx.commits) f()
      for (const s of tx.staged) {
        const row: MutableRow = {
          id: ++nextId,
          topic: s.topic,
          message: s.message,
          createdAt: s.createdAt,
          attempts: 0,
          state: "pending",
          availableAt: s.createdAt,
          claimedBy: undefined,
          claimedUntil: undefined,
          publishedAt: undefined,
          lastError: undefined,
          deadLetterPublished: undefined
        }
        rows.set(row.id, row)
        pending.set(row.id, row)
      }
      if (tx.staged.length > 0) for (const waker of wakers) Queue.unsafeOffer(waker, undefined)
    })

  // The transaction in context, if it is one of this module's (the service only shows `onCommit`).
  const currentTx = Effect.map(
    Effect.serviceOption(TransactionTag),
    (service) => Option.isSome(service) ? transactions.get(service.value) : undefined
  )
  const txService = (tx: Tx): Context.Tag.Service<MemoryTransaction> => {
    const service = {
      // A callback staged after the end would silently never run: that is a bug in the caller, so a defect.
      onCommit: (f: () => void) =>
        tx.open
          ? Effect.sync(() => void tx.commits.push(f))
          : Effect.dieMessage("MemoryTransaction.onCommit called after its transaction ended")
    }
    transactions.set(service, tx)
    return service
  }

  const transaction: MemoryOutboxStoreService["transaction"] = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.flatMap(currentTx, (outer) => {
      if (outer !== undefined && outer.owner === owner && outer.open) {
        // Nested: a savepoint. A failure drops what this level staged; the outer transaction goes on.
        const staged = outer.staged.length
        const commits = outer.commits.length
        return effect.pipe(
          Effect.onExit((exit) =>
            exit._tag === "Success" ? Effect.void : Effect.sync(() => {
              outer.staged.length = staged
              outer.commits.length = commits
            })
          )
        ) as Effect.Effect<A, E, Exclude<R, MemoryTransaction>>
      }
      // The permit is awaited interruptibly (a crash may hit a fiber waiting for it); once inside, the
      // effect runs interruptibly and the commit does not: an interruption before the commit drops the whole
      // transaction, and a commit, once started, completes.
      return lock.withPermits(1)(Effect.uninterruptibleMask((restore) => {
        const tx: Tx = { owner, open: true, staged: [], commits: [] }
        return restore(Effect.provideService(effect, TransactionTag, txService(tx))).pipe(
          Effect.tap(() => commit(tx)),
          Effect.ensuring(Effect.sync(() => {
            tx.open = false
          }))
        )
      })) as Effect.Effect<A, E, Exclude<R, MemoryTransaction>>
    })

  const appendMessages: Service["appendMessages"] = (topic, messages) =>
    Effect.flatMap(currentTx, (tx) => {
      if (tx === undefined || tx.owner !== owner || !tx.open) {
        return Effect.fail(new OutsideTransaction({ topic, count: messages.length }))
      }
      return Effect.map(Clock.currentTimeMillis, (now) => {
        for (const message of messages) tx.staged.push({ topic, message, createdAt: now })
      })
    })

  const withNow = <A>(f: (now: number) => A) => Effect.map(Clock.currentTimeMillis, f)

  const backlog = Effect.sync(() => pending.size)

  const lag = withNow((now) => {
    let oldest = now
    for (const row of pending.values()) if (row.createdAt < oldest) oldest = row.createdAt
    return Duration.millis(now - oldest)
  })

  const drained = Effect.suspend(() => {
    const maxId = nextId
    const loop: Effect.Effect<void> = Effect.suspend(() => {
      const first = pending.keys().next()
      if (first.done === true || first.value > maxId) return Effect.void
      return Effect.zipRight(Deferred.await(settledSignal), loop)
    })
    return loop
  })

  const deadLetters: Service["deadLetters"] = (limit = 100, topic) =>
    Effect.sync(() => {
      const out: Array<DeadRow> = []
      for (const row of rows.values()) {
        if (out.length >= limit) break
        if (row.state !== "dead" || (topic !== undefined && row.topic !== topic)) continue
        out.push({
          id: row.id,
          topic: row.topic,
          messageId: row.message.id,
          key: row.message.key,
          attempts: row.attempts,
          error: row.lastError ?? noRecord("no error recorded"),
          deadLetterPublished: row.deadLetterPublished === true
        })
      }
      return out
    })

  const requeueDead: Service["requeueDead"] = (selection = {}) =>
    withNow((now) => {
      const ids = selection.ids === undefined ? undefined : new Set(selection.ids)
      let requeued = 0
      for (const row of rows.values()) {
        if (row.state !== "dead") continue
        if (ids !== undefined ? !ids.has(row.id) : selection.topic !== undefined && row.topic !== selection.topic) continue
        row.state = "pending"
        row.attempts = 0
        row.availableAt = now
        row.deadLetterPublished = undefined
        release(row)
        pending.set(row.id, row)
        requeued++
      }
      if (requeued > 0) {
        // Back in id order: a claim walks the pending rows oldest first, and only a key's oldest is claimable.
        const ordered = [...pending.values()].sort((a, b) => a.id - b.id)
        pending.clear()
        for (const row of ordered) pending.set(row.id, row)
        for (const waker of wakers) Queue.unsafeOffer(waker, undefined)
      }
      return requeued
    })

  const claim: Service["claim"] = ({ leaseMillis, limit, relayId }) =>
    withNow((now) => {
      const out: Array<ClaimedRow> = []
      // Only the oldest pending row of a key is claimable, whether or not that row itself is.
      const heads = new Set<string>()
      for (const row of pending.values()) {
        if (out.length >= limit) break
        const key = row.message.key
        if (key !== "") {
          if (heads.has(key)) continue
          heads.add(key)
        }
        if (row.availableAt > now) continue
        if (row.claimedUntil !== undefined && row.claimedUntil >= now) continue
        row.claimedBy = relayId
        row.claimedUntil = now + leaseMillis
        out.push({ id: row.id, topic: row.topic, message: row.message, attempts: row.attempts })
      }
      return out
    })

  const held = (relayId: string, id: number) => {
    if (partitioned) return heldPartitioned(relayId, id)
    const row = pending.get(id)
    return row !== undefined && row.claimedBy === relayId ? row : undefined
  }
  const release = (row: MutableRow) => {
    row.claimedBy = undefined
    row.claimedUntil = undefined
  }

  const markPublished: Service["markPublished"] = (relayId, ids, keep = false) =>
    withNow((now) => {
      let marked = 0
      for (const id of ids) {
        const row = held(relayId, id)
        if (row === undefined) continue
        if (!keep) rows.delete(id)
        row.state = "published"
        row.publishedAt = now
        row.attempts++
        release(row)
        pending.delete(id)
        marked++
      }
      if (marked > 0) settled()
      return marked
    })

  const reschedule: Service["reschedule"] = (relayId, id, retry) =>
    withNow((now) => {
      const row = held(relayId, id)
      if (row === undefined) return false
      row.attempts = retry.attempts
      row.lastError = retry.error
      row.availableAt = now + retry.delayMillis
      release(row)
      return true
    })

  const markDead: Service["markDead"] = (relayId, id, dead) =>
    Effect.sync(() => {
      const row = held(relayId, id)
      if (row === undefined) return false
      row.state = "dead"
      row.attempts = dead.attempts
      row.lastError = dead.error
      row.deadLetterPublished = dead.deadLetterPublished
      release(row)
      pending.delete(id)
      settled()
      return true
    })

  const renew: Service["renew"] = (relayId, ids, leaseMillis) =>
    withNow((now) => {
      const renewed: Array<number> = []
      for (const id of ids) {
        const row = held(relayId, id)
        if (row === undefined) continue
        row.claimedUntil = now + leaseMillis
        renewed.push(id)
      }
      return renewed
    })

  // ---------------------------------------------------------------- partitioned (mirrors the SQL store's)
  // Keys hash to a fixed set of partitions, each leased by one relay; the holder reads its partitions' pending
  // rows in id order with no row lease, and settles only rows of partitions it still holds. A key with a row
  // waiting for a retry is left out of the claim. Balancing as in SQL: every `balanceEvery` (or while it holds
  // none) a relay registers, hands back partitions beyond its share and takes free or expired ones.
  const partitionCount = 32
  const partitions = Array.from({ length: partitionCount }, () => ({ owner: undefined as string | undefined, leaseUntil: 0 }))
  const registered = new Map<string, number>()
  const balancedAt = new Map<string, { at: number; held: number }>()
  const balanceEvery = 100
  const hashKey = (key: string) => {
    let h = 0x811c9dc5
    for (let i = 0; i < key.length; i++) {
      h ^= key.charCodeAt(i)
      h = Math.imul(h, 0x01000193)
    }
    return h >>> 0
  }
  const partitionOf = (row: MutableRow) =>
    row.message.key === "" ? row.id % partitionCount : hashKey(row.message.key) % partitionCount
  const owns = (relayId: string, row: MutableRow) => partitions[partitionOf(row)]!.owner === relayId
  const balance = (relayId: string, leaseMillis: number, now: number) => {
    registered.set(relayId, now + leaseMillis)
    let live = 0
    for (const until of registered.values()) if (until > now) live++
    const share = Math.ceil(partitionCount / Math.max(1, live))
    const mine = partitions.flatMap((p, i) => p.owner === relayId ? [i] : [])
    if (mine.length > share) {
      for (const i of mine.slice(share)) partitions[i] = { owner: undefined, leaseUntil: 0 }
      return share
    }
    let held = mine.length
    for (const p of partitions) {
      if (held >= share) break
      if (p.owner !== relayId && (p.owner === undefined || p.leaseUntil < now)) {
        p.owner = relayId
        p.leaseUntil = now + leaseMillis
        held++
      }
    }
    return held
  }
  const claimPartitioned: Service["claim"] = ({ leaseMillis, limit, relayId }) =>
    withNow((now) => {
      const last = balancedAt.get(relayId)
      if (last === undefined || last.held === 0 || now - last.at >= balanceEvery) {
        balancedAt.set(relayId, { at: now, held: balance(relayId, leaseMillis, now) })
      }
      for (const p of partitions) if (p.owner === relayId) p.leaseUntil = now + leaseMillis
      const retrying = new Set<string>()
      for (const row of pending.values()) {
        if (row.attempts > 0 && row.availableAt > now && row.message.key !== "") retrying.add(row.message.key)
      }
      const out: Array<ClaimedRow> = []
      for (const row of pending.values()) {
        if (out.length >= limit) break
        if (row.availableAt > now || retrying.has(row.message.key) || !owns(relayId, row)) continue
        out.push({ id: row.id, topic: row.topic, message: row.message, attempts: row.attempts })
      }
      return out
    })
  // The row, if it is pending in a partition `relayId` holds.
  const heldPartitioned = (relayId: string, id: number) => {
    const row = pending.get(id)
    return row !== undefined && owns(relayId, row) ? row : undefined
  }
  const renewPartitioned: Service["renew"] = (relayId, ids, leaseMillis) =>
    withNow((now) => {
      for (const p of partitions) if (p.owner === relayId) p.leaseUntil = now + leaseMillis
      return ids.filter((id) => heldPartitioned(relayId, id) !== undefined)
    })

  const cleanup: Service["cleanup"] = (retentionMillis) =>
    withNow((now) => {
      let deleted = 0
      for (const [id, row] of rows) {
        if (row.state === "published" && (row.publishedAt ?? now) < now - retentionMillis) {
          rows.delete(id)
          deleted++
        }
      }
      return deleted
    })

  // Every relay has a one-slot signal that commits with rows fill: a burst of commits while a round runs
  // folds into one extra claim. No registration dance is needed, since signalling costs nothing here.
  const wakeup: Service["wakeup"] = () =>
    Effect.gen(function*() {
      const signal = yield* Queue.sliding<void>(1)
      yield* Effect.acquireRelease(Effect.sync(() => wakers.add(signal)), () => Effect.sync(() => wakers.delete(signal)))
      const wakeup: Wakeup = {
        found: Effect.void,
        idle: Effect.succeed(false),
        wait: (timeout) => Queue.take(signal).pipe(Effect.timeout(timeout), Effect.ignore)
      }
      return wakeup
    })

  // A stopped relay's hand-back: its rows, or its partitions and registration, free at once.
  const releaseHeld: Service["release"] = (relayId) =>
    Effect.sync(() => {
      let released = 0
      if (partitioned) {
        registered.delete(relayId)
        balancedAt.delete(relayId)
        for (let i = 0; i < partitions.length; i++) {
          if (partitions[i]!.owner === relayId) {
            partitions[i] = { owner: undefined, leaseUntil: 0 }
            released++
          }
        }
      } else {
        for (const row of pending.values()) {
          if (row.claimedBy === relayId) {
            release(row)
            released++
          }
        }
      }
      if (released > 0) for (const waker of wakers) Queue.unsafeOffer(waker, undefined)
    })

  const snapshot = Effect.sync(() => Array.from(rows.values(), (row): Row => ({ ...row })))

  return {
    name,
    appendMessages,
    backlog,
    lag,
    drained,
    deadLetters,
    requeueDead,
    claim: partitioned ? claimPartitioned : claim,
    markPublished,
    reschedule,
    markDead,
    renew: partitioned ? renewPartitioned : renew,
    cleanup,
    wakeup,
    release: releaseHeld,
    transaction,
    rows: snapshot
  }
}

