/**
 * The cursor store port: where a poller keeps how far it has read a source, and the lease that lets one
 * poller per source run among many instances.
 *
 * The protocol every driver keeps:
 *
 * - **Atomic progress**: `save` runs inside `transaction`, the same transaction as the outbox rows the page
 *   produced, so a crash leaves either both (the page is done) or neither (the page is read again).
 * - **Fencing**: `save` writes only while the caller still holds the lease; otherwise it fails with
 *   {@link LeaseLost} and the transaction, outbox rows included, rolls back. A poller paused past its lease
 *   (a long GC, a frozen VM) cannot commit a page after another instance took over.
 * - **Lease**: `acquire` succeeds when nobody holds the source, the caller already holds it, or the holder's
 *   lease expired; `renew` extends it while the caller still holds it. Lease times are the store's clock
 *   (the database's `now()` for SQL), so instances with skewed clocks agree.
 */
import { Failure } from "@bulwark/core"
import { Context, Data, type Effect, type Option } from "effect"

/** The store failed (the driver's error is the `cause`). Transient `dependency`. */
export class CursorStoreError extends Data.TaggedError("CursorStoreError")<{
  readonly operation: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("transient", "dependency")
  }
  override get message(): string {
    return `cursor store ${this.operation} failed: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** Another instance holds the source now: this one must stop polling it. Nothing it wrote in the transaction stays. */
export class LeaseLost extends Data.TaggedError("LeaseLost")<{
  readonly source: string
  readonly holder: string
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("transient", "dependency")
  }
  override get message(): string {
    return `poller ${this.holder} no longer holds the lease of source ${this.source}`
  }
}

/** The cursor store port. */
export class CursorStore extends Context.Tag("@bulwark/poll/CursorStore")<CursorStore, {
  /** A name for logs (the table for SQL). */
  readonly name: string
  /** The saved cursor of `source`, if any. */
  readonly load: (source: string) => Effect.Effect<Option.Option<string>, CursorStoreError>
  /** Takes the lease of `source` for `leaseMillis` (see the module comment); answers whether `holder` has it. */
  readonly acquire: (source: string, holder: string, leaseMillis: number) => Effect.Effect<boolean, CursorStoreError>
  /** Extends the lease while `holder` still has it; answers whether it does. */
  readonly renew: (source: string, holder: string, leaseMillis: number) => Effect.Effect<boolean, CursorStoreError>
  /** Gives the lease up (on shutdown), so another instance takes over at once. */
  readonly release: (source: string, holder: string) => Effect.Effect<void, CursorStoreError>
  /** Runs `effect` as one transaction, shared with the outbox's `append`. */
  readonly transaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | CursorStoreError, R>
  /**
   * Saves the cursor (`undefined`: none yet) in the current transaction if `holder` still holds the lease;
   * {@link LeaseLost} otherwise.
   */
  readonly save: (source: string, holder: string, cursor: string | undefined) => Effect.Effect<void, CursorStoreError | LeaseLost>
}>() {}

/** The service a cursor store driver implements. */
export interface Service extends Context.Tag.Service<CursorStore> {}
