/**
 * A consumer group's reader of one stream, one per process: it holds the group's shard leases (in the
 * `CheckpointStore`), reads each leased shard with `GetRecords` into a bounded window, and hands the records to
 * the process's subscribers of the group, which compete for them. Kinesis has no acknowledgement, so this is
 * where the transport's semantics are made:
 *
 * - a delivery is in flight until settled; unsettled past the visibility timeout (a subscriber that died) it is
 *   handed out again, attempt + 1. `nack` hands it out again after the delay;
 * - per-key order: within a shard (a key always maps to one shard) a record is not handed out while an earlier
 *   record of its key is unsettled;
 * - the checkpoint is the last record up to which everything was settled, written to the store (several acks
 *   of one turn in one write); another process taking the shard over (this one died: its lease expired)
 *   resumes after it, and counts the records it reads again as a further attempt;
 * - a shard closed by a reshard is read to its end before its children are read, so per-key order holds across
 *   the reshard.
 *
 * The reader lives while the process has subscribers of the group, and `idleRelease` after the last one left
 * (so deliveries settled after their stream ended still count); then it writes its checkpoints and releases
 * its leases.
 */
import { GetRecordsCommand, GetShardIteratorCommand, type KinesisClient, type Shard } from "@aws-sdk/client-kinesis"
import type { Delivery } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { Chunk, Deferred, Duration, Effect, ExecutionStrategy, Exit, Fiber, FiberId, Runtime, Schedule, Scope } from "effect"
import type { CheckpointStoreError, Service as Store, ShardKey } from "../CheckpointStore.js"
import { decode } from "./codec.js"
import { call, CallError, isTransient, nameOf, type Settings } from "./connection.js"
import { listShards } from "./topology.js"

/** The checkpoint of a shard that was read to its end and settled. */
export const shardEnd = "SHARD_END"

interface Entry {
  readonly sequence: string
  readonly message: Delivery.Message
  status: "pending" | "inflight" | "acked"
  attempt: number
  notBefore: number
  deadline: number
  /** Grows with every hand-out, so a late `nack` of an earlier one does nothing. */
  generation: number
}

interface ShardState {
  readonly key: ShardKey
  /** Records read and not yet below the checkpoint, in shard order. */
  window: Array<Entry>
  checkpoint: string | undefined
  /** Sequence numbers up to this one were fetched by an earlier owner (their attempt is `retries + 1`). */
  readonly seenBefore: bigint | undefined
  readonly retries: number
  /** The highest sequence number fetched. */
  fetched: string | undefined
  /** Read to its end: no next iterator. */
  closed: boolean
  /** The lease is gone (lost or released): its records are no longer this reader's to settle. */
  lost: boolean
  /**
   * Given up for another reader of the group (this one holds more than its share): nothing more is fetched, and
   * the lease is released once what was fetched is settled, or at `handOverBy` (the rest is read again).
   */
  handOverBy: number | undefined
  flush: () => Promise<void>
  /** Set while the shard's read waits for room in the window. */
  space: Deferred.Deferred<void> | undefined
  /** A checkpoint write is queued for this turn. */
  flushQueued: boolean
  fiber?: Fiber.RuntimeFiber<void, never>
}

/** What a reader needs from the driver. */
export interface ReaderDeps {
  readonly client: KinesisClient
  readonly settings: Settings
  readonly store: Store
  readonly topic: string
  readonly stream: string
  readonly group: string
  readonly owner: string
  /** Publishes a dead-letter copy to the topic's `.dlq` stream. */
  readonly deadLetter: (copy: Transport.OutgoingMessage) => Effect.Effect<void, unknown>
  /** Called once the reader closed (idle, or failed), so the next subscription makes a new one. */
  readonly onClose: () => void
}

/** A group's reader, shared by the process's subscriptions of the group. */
export interface Reader {
  /** Joins the reader; false when it is closing (the caller makes a new one). */
  readonly attach: Effect.Effect<boolean>
  readonly detach: Effect.Effect<void>
  /** Up to `max` deliveries, waiting until there is one. */
  readonly take: (max: number) => Effect.Effect<Chunk.Chunk<Delivery.Delivery>, Transport.SubscribeError>
}

const later = (a: string, b: string) => BigInt(a) > BigInt(b)

/** Starts a reader in its own scope (a child of `parent`); it claims its shards in the background. */
export const makeReader = (deps: ReaderDeps, parent: Scope.Scope): Effect.Effect<Reader> =>
  Effect.gen(function*() {
    const { client, settings, store, stream, topic } = deps
    const scope = yield* Scope.fork(parent, ExecutionStrategy.sequential)
    const runtime = yield* Effect.runtime<never>()
    const runPromise = Runtime.runPromise(runtime)
    const shards = new Map<string, ShardState>()
    const visibility = Duration.toMillis(settings.visibilityTimeout)
    const pollMillis = Duration.toMillis(settings.pollInterval)
    const state = {
      changed: Deferred.unsafeMake<void>(FiberId.none),
      /** Someone waits on `changed`: only then does a change need a new one (acks come by the thousand). */
      awaited: false,
      failure: undefined as unknown,
      subscribers: 0,
      closing: false,
      idle: undefined as Fiber.RuntimeFiber<void, never> | undefined,
      turn: 0
    }
    const signal = () => {
      if (!state.awaited) return
      state.awaited = false
      const changed = state.changed
      state.changed = Deferred.unsafeMake(FiberId.none)
      Deferred.unsafeDone(changed, Exit.void)
    }
    const awaitChange = Effect.suspend(() => {
      state.awaited = true
      return Deferred.await(state.changed)
    })
    const keyOf = (shard: string): ShardKey => ({ stream, group: deps.group, shard })

    // ---- checkpoints --------------------------------------------------------------------------------------
    const position = (shard: ShardState) => {
      const ended = shard.closed && shard.window.length === 0
      const sequence = ended ? shardEnd : shard.checkpoint!
      const caughtUp = ended || shard.fetched === undefined || shard.checkpoint === shard.fetched
      return { sequence, caughtUp, ended }
    }
    const writeCheckpoint = (shard: ShardState): Effect.Effect<void, CheckpointStoreError> =>
      Effect.suspend(() => {
        if (shard.checkpoint === undefined && !(shard.closed && shard.window.length === 0)) return Effect.void
        return Effect.map(store.checkpoint(shard.key, deps.owner, position(shard)), (held) => {
          if (!held) shard.lost = true
        })
      })

    const warn = (message: string) => (cause: unknown) => Runtime.runFork(runtime)(Effect.logWarning(message, cause))

    const advance = (shard: ShardState): boolean => {
      let n = 0
      while (n < shard.window.length && shard.window[n]!.status === "acked") n++
      if (n === 0) return false
      shard.checkpoint = shard.window[n - 1]!.sequence
      shard.window.splice(0, n)
      return true
    }

    const settle = (shard: ShardState, entry: Entry): Effect.Effect<void, unknown> =>
      Effect.suspend(() => {
        // The lease went to another process (or the reader closed): that one reads the record again.
        if (shard.lost || entry.status === "acked") return Effect.void
        entry.status = "acked"
        const moved = advance(shard)
        signal()
        if (!moved) return Effect.void
        if (shard.space !== undefined && shard.window.length <= settings.maxBuffered / 2) Deferred.unsafeDone(shard.space, Exit.void)
        if (settings.confirmAcks) return Effect.tryPromise(() => shard.flush())
        // One write per turn for all the acks of the turn, none awaited.
        if (!shard.flushQueued) {
          shard.flushQueued = true
          setImmediate(() => {
            shard.flushQueued = false
            // Closed meanwhile: its finalizer wrote the checkpoint, and the store may be gone.
            if (shard.lost) return
            shard.flush().catch(warn(`checkpoint of ${stream}/${shard.key.shard} failed; records may be delivered again`))
          })
        }
        return Effect.void
      })

    const nackOf = (shard: ShardState, entry: Entry, generation: number, delayMillis: number) =>
      Effect.sync(() => {
        if (shard.lost || entry.status !== "inflight" || entry.generation !== generation) return
        entry.status = "pending"
        entry.attempt++
        entry.notBefore = Date.now() + delayMillis
        signal()
      })

    // One object per hand-out, its operations on the prototype: a delivery per record is the hot path, and
    // closures per record cost more than the work they do.
    class Settlement implements Driver.Settlement {
      constructor(readonly shard: ShardState, readonly entry: Entry, readonly generation: number) {}
      get ack() {
        return settle(this.shard, this.entry)
      }
      nack(delayMillis: number) {
        return nackOf(this.shard, this.entry, this.generation, delayMillis)
      }
      // The copy first, then the original is settled: a failure between leaves it in both places, never neither.
      deadLetter(copy: Transport.OutgoingMessage) {
        return Effect.zipRight(deps.deadLetter(copy), settle(this.shard, this.entry))
      }
    }

    const deliveryOf = (shard: ShardState, entry: Entry): Delivery.Delivery =>
      Driver.delivery(entry.message, entry.attempt, new Settlement(shard, entry, entry.generation))

    // ---- hand-out -----------------------------------------------------------------------------------------
    const collect = (max: number): { out: Array<Delivery.Delivery>; wake: number } => {
      const now = Date.now()
      const out: Array<Delivery.Delivery> = []
      let wake = now + 200
      const list = [...shards.values()]
      // Another shard first each turn, so one busy shard does not starve the others.
      const start = list.length === 0 ? 0 : state.turn++ % list.length
      for (let s = 0; s < list.length && out.length < max; s++) {
        const shard = list[(start + s) % list.length]!
        if (shard.lost) continue
        const busy = new Set<string>()
        for (const entry of shard.window) {
          if (out.length >= max) break
          if (entry.status === "acked") continue
          const key = entry.message.key
          if (entry.status === "inflight") {
            if (entry.deadline > now) {
              wake = Math.min(wake, entry.deadline)
              if (key !== "") busy.add(key)
              continue
            }
            // Unsettled past the visibility timeout: its subscriber is gone.
            entry.status = "pending"
            entry.attempt++
            entry.notBefore = 0
          }
          if (key !== "" && busy.has(key)) continue
          if (key !== "") busy.add(key)
          if (entry.notBefore > now) {
            wake = Math.min(wake, entry.notBefore)
            continue
          }
          entry.status = "inflight"
          entry.deadline = now + visibility
          entry.generation++
          out.push(deliveryOf(shard, entry))
        }
      }
      return { out, wake }
    }

    const subscribeError = (cause: unknown) => new Transport.SubscribeError({ topic, cause: cause instanceof CallError ? cause.cause : cause })

    const take = (max: number): Effect.Effect<Chunk.Chunk<Delivery.Delivery>, Transport.SubscribeError> =>
      Effect.suspend(() => {
        if (state.failure !== undefined) return Effect.fail(subscribeError(state.failure))
        const { out, wake } = collect(max)
        if (out.length > 0) return Effect.succeed(Chunk.unsafeFromArray(out))
        return Effect.zipRight(
          Effect.raceFirst(awaitChange, Effect.sleep(Duration.millis(Math.max(1, wake - Date.now())))),
          take(max)
        )
      }).pipe(Driver.inRealTime)

    // ---- reading a shard ----------------------------------------------------------------------------------
    const backoff = Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("2 seconds")), Schedule.upTo(settings.reconnectTimeout))
    // A read that succeeds (nearly all) sets up no schedule.
    const retrying = <A>(effect: Effect.Effect<A, CallError>) =>
      Driver.retryTransient(effect, { while: (error) => isTransient(error.cause), schedule: backoff })

    const iteratorAfter = (shard: ShardState) => {
      const after = shard.fetched ?? shard.checkpoint
      return retrying(call((abortSignal) =>
        client.send(
          new GetShardIteratorCommand(
            after === undefined
              ? { StreamName: stream, ShardId: shard.key.shard, ShardIteratorType: "TRIM_HORIZON" }
              : { StreamName: stream, ShardId: shard.key.shard, ShardIteratorType: "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber: after }
          ),
          { abortSignal }
        )
      )).pipe(Effect.map((out) => out.ShardIterator))
    }

    const unsettled = (shard: ShardState) => shard.window.length

    const readShard = (shard: ShardState): Effect.Effect<void, CallError | CheckpointStoreError> =>
      Effect.gen(function*() {
        let iterator = yield* iteratorAfter(shard)
        while (iterator !== undefined && !shard.lost && !state.closing && shard.handOverBy === undefined) {
          if (unsettled(shard) >= settings.maxBuffered) {
            // Resumes once half the window is settled, not at every ack.
            yield* Effect.raceFirst(Deferred.await(shard.space = Deferred.unsafeMake(FiberId.none)), Effect.sleep(settings.pollInterval))
            shard.space = undefined
            continue
          }
          const current: string = iterator
          const readStarted = Date.now()
          // No abort signal: it would turn the client's handler cache off (see `connect`).
          const out = yield* retrying(call(() => client.send(new GetRecordsCommand({ ShardIterator: current, Limit: settings.fetchLimit })))).pipe(
            // Iterators expire after 5 minutes: a new one after the last record read.
            Effect.catchIf((error) => nameOf(error.cause) === "ExpiredIteratorException", () =>
              Effect.map(iteratorAfter(shard), (fresh) => ({ Records: [], NextShardIterator: fresh, MillisBehindLatest: 1 })))
          )
          const records = out.Records ?? []
          for (const record of records) {
            const sequence = record.SequenceNumber!
            const seen = shard.seenBefore !== undefined && BigInt(sequence) <= shard.seenBefore
            shard.window.push({
              sequence,
              message: decode(topic, record),
              status: "pending",
              attempt: seen ? shard.retries + 1 : 1,
              notBefore: 0,
              deadline: 0,
              generation: 0
            })
            shard.fetched = sequence
          }
          if (records.length > 0) {
            signal()
            // Where a takeover would count its reads as further attempts.
            if (shard.seenBefore === undefined || later(shard.fetched!, shard.seenBefore.toString())) {
              if (!(yield* Driver.retryTransient(store.delivered(shard.key, deps.owner, shard.fetched!), { while: () => true, schedule: backoff }))) {
                shard.lost = true
              }
            }
          }
          iterator = out.NextShardIterator
          // Caught up (a short read, nothing behind): the next read starts no sooner than `pollInterval` after
          // this one started, so a trickle of records is read in batches rather than a call per few records
          // (every call counts against the shard's 5 reads a second). Counted from the read's start, not its
          // answer: the time the call took is part of the pause, not added to it.
          if (iterator !== undefined && records.length < settings.fetchLimit && (out.MillisBehindLatest ?? 0) === 0) {
            const rest = pollMillis - (Date.now() - readStarted)
            if (rest > 0) yield* Effect.sleep(Duration.millis(rest))
          }
        }
        if (iterator === undefined) {
          // Closed by a reshard: once everything read is settled, the shard is marked ended for its children.
          shard.closed = true
          while (shard.window.length > 0 && !shard.lost && !state.closing) {
            yield* Effect.raceFirst(awaitChange, Effect.sleep(settings.pollInterval))
          }
          if (!shard.lost && !state.closing) yield* writeCheckpoint(shard)
        }
      })

    const fail = (cause: unknown) =>
      Effect.suspend(() => {
        if (state.failure === undefined) state.failure = cause
        signal()
        return close
      })

    // ---- leases -------------------------------------------------------------------------------------------
    const eligible = (shard: Shard, listed: ReadonlySet<string>) =>
      Effect.gen(function*() {
        for (const parent of [shard.ParentShardId, shard.AdjacentParentShardId]) {
          if (parent !== undefined && listed.has(parent) && !(yield* store.ended(keyOf(parent)))) return false
        }
        return true
      })

    const claim = (shard: Shard, listed: ReadonlySet<string>) =>
      Effect.gen(function*() {
        const id = shard.ShardId!
        if (!(yield* eligible(shard, listed))) return
        const lease = yield* store.claim(keyOf(id), deps.owner, settings.leaseDuration)
        if (lease === undefined) return
        if (lease.ended) {
          // Nothing left to read; holding it would keep it from others for nothing.
          yield* store.release(keyOf(id), deps.owner)
          return
        }
        const shardState: ShardState = {
          key: keyOf(id),
          window: [],
          checkpoint: lease.checkpoint,
          seenBefore: lease.delivered === undefined ? undefined : BigInt(lease.delivered),
          retries: lease.retries,
          fetched: undefined,
          closed: false,
          lost: false,
          handOverBy: undefined,
          flush: () => Promise.resolve(),
          space: undefined,
          flushQueued: false
        }
        shardState.flush = Driver.batcher<void>(() => runPromise(writeCheckpoint(shardState)))
        shards.set(id, shardState)
        shardState.fiber = yield* readShard(shardState).pipe(
          Effect.catchAll((error) => fail(error)),
          Driver.inRealTime,
          Effect.interruptible,
          Effect.forkIn(scope)
        )
      })

    // Gives a shard's lease up: its checkpoint written first, so the next holder starts after what was settled.
    const handOver = (id: string, shard: ShardState) =>
      Effect.gen(function*() {
        shards.delete(id)
        yield* writeCheckpoint(shard)
        shard.lost = true
        signal()
        yield* store.release(shard.key, deps.owner)
      })

    const group = { stream, group: deps.group }
    // An open shard (not closed by a reshard) counts towards a reader's share; a closed one is read to its end
    // by whoever holds it, since its children wait for it.
    const isOpen = (shard: Shard) => shard.SequenceNumberRange?.EndingSequenceNumber === undefined
    let listing = 0
    let listed: ReadonlyArray<Shard> = []
    const leaseTick = Effect.gen(function*() {
      const now = Date.now()
      for (const [id, shard] of shards) {
        if (shard.lost || !(yield* store.renew(shard.key, deps.owner, settings.leaseDuration))) {
          shard.lost = true
          shards.delete(id)
          signal()
        } else if (shard.closed && shard.window.length === 0 && shard.fiber !== undefined && shard.fiber.unsafePoll() !== null) {
          // Read to its end and settled: given up, so the children (claimed by whoever) may start; listed
          // again now, since a closed shard means a reshard made new ones.
          shards.delete(id)
          yield* store.release(shard.key, deps.owner)
          listed = []
        } else if (shard.handOverBy !== undefined && (shard.window.length === 0 || now >= shard.handOverBy)) {
          yield* handOver(id, shard)
        }
      }
      // The shard list changes only with a reshard: asked for again every tenth tick.
      if (listing++ % 10 === 0 || listed.length === 0) listed = yield* retrying(listShards(client, stream))
      const ids = new Set(listed.map((s) => s.ShardId!))
      // Each reader of the group holds about its share of the open shards (as the KCL balances leases): one
      // holding more gives the excess up, so a process joining the group gets work; fewer, it claims more.
      const alive = yield* store.announce(group, deps.owner, settings.leaseDuration)
      const open = new Set(listed.filter(isOpen).map((s) => s.ShardId!))
      const share = Math.max(1, Math.ceil(open.size / alive))
      const keeping = [...shards].filter(([id, shard]) => open.has(id) && shard.handOverBy === undefined)
      for (const [, shard] of keeping.slice(share)) shard.handOverBy = now + Duration.toMillis(settings.visibilityTimeout)
      let held = Math.min(keeping.length, share)
      for (const shard of listed) {
        const id = shard.ShardId!
        if (shards.has(id)) continue
        if (open.has(id)) {
          if (held >= share) continue
          yield* claim(shard, ids)
          if (shards.has(id)) held++
        } else {
          yield* claim(shard, ids)
        }
      }
    })

    const leaseLoop = leaseTick.pipe(
      // A store or service that is away for a moment is retried; away past `reconnectTimeout`, the reader fails
      // (its subscriptions with it) and its leases expire for whoever is still there.
      Effect.retry({ schedule: backoff }),
      Effect.zipRight(Effect.sleep(Duration.unsafeDivide(settings.leaseDuration, 3))),
      Effect.forever,
      Effect.catchAll((error) => fail(error)),
      Driver.inRealTime
    )

    // ---- closing ------------------------------------------------------------------------------------------
    const close: Effect.Effect<void> = Effect.suspend(() => {
      if (state.closing) return Effect.void
      state.closing = true
      deps.onClose()
      // In a fiber of the driver's scope: the caller may be one of the fibers this closes.
      return Effect.asVoid(Effect.forkIn(Scope.close(scope, Exit.void), parent))
    })

    yield* Scope.addFinalizer(
      scope,
      // Suspended: the shards held when the reader closes, not those held when it started (none).
      Effect.suspend(() => Effect.forEach([...shards.values()], (shard) =>
        Effect.zipRight(
          shard.lost ? Effect.void : Effect.ignore(writeCheckpoint(shard)),
          Effect.ignore(store.release(shard.key, deps.owner))
        ).pipe(Effect.ensuring(Effect.sync(() => {
          shard.lost = true
        }))), { discard: true })).pipe(
        Effect.zipRight(Effect.ignore(store.leave(group, deps.owner))),
        Effect.ensuring(Effect.sync(signal))
      )
    )
    yield* Effect.forkIn(Effect.interruptible(leaseLoop), scope)

    return {
      attach: Effect.suspend(() => {
        if (state.closing) return Effect.succeed(false)
        state.subscribers++
        const idle = state.idle
        state.idle = undefined
        return idle === undefined ? Effect.succeed(true) : Effect.as(Fiber.interruptFork(idle), true)
      }),
      detach: Effect.suspend(() => {
        state.subscribers--
        if (state.subscribers > 0 || state.closing) return Effect.void
        return Effect.sleep(settings.idleRelease).pipe(
          Effect.zipRight(Effect.suspend(() => (state.subscribers === 0 ? close : Effect.void))),
          Driver.inRealTime,
          // Forked from a finalizer, which is uninterruptible: the timer must not be, or a new subscriber waits it out.
          Effect.interruptible,
          Effect.forkIn(scope),
          Effect.tap((fiber) => Effect.sync(() => {
            state.idle = fiber
          })),
          Effect.asVoid
        )
      }),
      take
    }
  })
