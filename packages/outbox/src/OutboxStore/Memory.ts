/**
 * The in-process outbox store, for tests and the deterministic simulator: the real `Outbox.append` and
 * `Relay` run over it without a database. Time comes from Effect's `Clock` only (leases, backoff,
 * retention, lag), it uses no timers, promises or I/O, and its wake-up is an in-process signal.
 *
 * Transactions: {@link transaction} runs an effect as one transaction. `Outbox.append` inside it stages its
 * rows; they become visible atomically when the effect succeeds, and vanish if it fails, dies or is
 * interrupted (a simulated crash). {@link onCommit} stages the caller's own in-memory writes the same way:
 * each callback runs synchronously at commit, just before the rows appear. Transactions run one at a time
 * (a critical section, like a serialisable database); a nested `transaction` joins the outer one as a
 * savepoint: its failure drops only what it staged.
 */
import type { Failure } from "@bulwark/core"
import type { Transport } from "@bulwark/transport"
import { Context, Effect, Layer } from "effect"
import { makeMemoryStore } from "../internal/memoryStore.js"
import { fromStore, Outbox } from "../Outbox.js"
import { OutboxStore, type Service } from "../OutboxStore.js"

/** Settings of the memory store. */
export interface Options {
  /** A name for logs. Default `memory`. */
  readonly name?: string
  /** Relays lease partitions of keys instead of rows, as the SQL store's `partitioned` option (same semantics). */
  readonly partitioned?: boolean
}

/** The transaction in progress, in the context of the effect given to {@link transaction}. */
export class MemoryTransaction extends Context.Tag("@bulwark/outbox/MemoryTransaction")<MemoryTransaction, {
  /**
   * Runs `f` synchronously when the transaction commits (in registration order, before the appended rows
   * become visible); never if it rolls back. `f` must not throw: a throw is a defect, and callbacks
   * registered before it have already run. Called after the transaction ended, it dies (a bug in the caller).
   */
  readonly onCommit: (f: () => void) => Effect.Effect<void>
}>() {}

/** A committed row, as {@link MemoryOutboxStoreService.rows} shows it (a copy). */
export interface Row {
  readonly id: number
  readonly topic: string
  readonly message: Transport.OutgoingMessage
  readonly createdAt: number
  readonly attempts: number
  readonly state: "pending" | "published" | "dead"
  readonly availableAt: number
  readonly claimedBy: string | undefined
  readonly claimedUntil: number | undefined
  readonly publishedAt: number | undefined
  readonly lastError: Failure.FailureRecord | undefined
  readonly deadLetterPublished: boolean | undefined
}

/** The memory store: the port, plus its transactions and a view of its rows. */
export interface MemoryOutboxStoreService extends Service {
  /**
   * Runs `effect` as one transaction (see the module comment); answers its result. Waits while another
   * transaction of this store runs.
   */
  readonly transaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, Exclude<R, MemoryTransaction>>
  /** Every committed row still kept, in id order (copies). */
  readonly rows: Effect.Effect<ReadonlyArray<Row>>
}

/** The memory store in context (for its transactions). */
export class MemoryOutboxStore extends Context.Tag("@bulwark/outbox/MemoryOutboxStore")<
  MemoryOutboxStore,
  MemoryOutboxStoreService
>() {}

/** Creates an empty memory store. */
export const make = (options: Options = {}): Effect.Effect<MemoryOutboxStoreService> =>
  Effect.sync(() => makeMemoryStore(options.name ?? "memory", MemoryTransaction, options.partitioned === true))

/** Provides a fresh memory store as the port, as the {@link Outbox} `append` writes through, and as itself. */
export const layer = (options: Options = {}): Layer.Layer<MemoryOutboxStore | OutboxStore | Outbox> =>
  Layer.effectContext(Effect.map(make(options), (store) =>
    Context.make(MemoryOutboxStore, store).pipe(
      Context.add(OutboxStore, store),
      Context.add(Outbox, fromStore(store))
    )))

/** Runs `effect` as one transaction of the memory store in context. */
export const transaction = <A, E, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, Exclude<R, MemoryTransaction> | MemoryOutboxStore> =>
  Effect.flatMap(MemoryOutboxStore, (store) => store.transaction(effect))

/** Stages `f` to run synchronously when the current transaction commits. */
export const onCommit = (f: () => void): Effect.Effect<void, never, MemoryTransaction> =>
  Effect.flatMap(MemoryTransaction, (tx) => tx.onCommit(f))
