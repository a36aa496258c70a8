/**
 * The `idempotent` middleware (stage `idempotency`): a handler runs at most once per key while the key is
 * retained. The first delivery claims the key and completes it on success; a duplicate whose first run
 * completed returns at once without running; a duplicate that races a live run waits (bounded) or fails
 * with {@link IdempotencyStore.InProgressError} (transient, `retryAfter` = the rest of that lease) so the
 * pipeline nacks it with that delay. A failed run releases the key, so a redelivery or a replay runs again.
 */
import { Envelope, Handler } from "@bulwark/core"
import { Duration, Effect } from "effect"
import { createHash } from "node:crypto"
import * as Store from "./IdempotencyStore.js"

/** Derives the idempotency key of an envelope. */
export type KeyStrategy<A> = (envelope: Envelope.Envelope<A>) => string

/** The producer's event id: right when ids are stable across re-sends. */
export const byEnvelopeId: KeyStrategy<unknown> = (envelope) => `id:${envelope.id}`

/** A business key (e.g. an order id): right when a producer re-sends the same fact under new ids. */
export const byBusinessKey = <A>(f: (envelope: Envelope.Envelope<A>) => string): KeyStrategy<A> => (envelope) =>
  `biz:${f(envelope)}`

/**
 * JSON with object keys sorted at every level, so two payloads equal as data serialise identically
 * whatever their key order. Values with `toJSON` (dates, `DateTime`) are serialised as JSON would.
 */
export const canonicalJson = (value: unknown): string => {
  const normalise = (u: unknown): unknown => {
    if (u !== null && typeof u === "object" && typeof (u as { toJSON?: unknown }).toJSON === "function") {
      return normalise((u as { toJSON: () => unknown }).toJSON())
    }
    if (Array.isArray(u)) return u.map(normalise)
    if (u instanceof Uint8Array) return Buffer.from(u).toString("base64")
    if (u !== null && typeof u === "object") {
      const out: Record<string, unknown> = {}
      for (const key of Object.keys(u).sort()) {
        const v = (u as Record<string, unknown>)[key]
        if (v !== undefined) out[key] = normalise(v)
      }
      return out
    }
    if (typeof u === "bigint") return u.toString()
    return u
  }
  return JSON.stringify(normalise(value)) ?? "null"
}

/** SHA-256 of the canonical JSON of the payload, scoped by event type: for producers with no stable id at all. */
export const byPayloadHash: KeyStrategy<unknown> = (envelope) =>
  `hash:${envelope.type}:${createHash("sha256").update(canonicalJson(envelope.data)).digest("hex")}`

/** Settings of {@link idempotent}. */
export interface Options<A> extends Store.WaitOptions {
  /** How the key is derived: `"envelopeId"`, `"payloadHash"` or a function (a business key). Default `"envelopeId"`. */
  readonly key?: "envelopeId" | "payloadHash" | KeyStrategy<A>
  /** Prefix keeping this handler's keys apart from other handlers' in a shared store. Default `""`. */
  readonly namespace?: string
  /** How long one run owns its key; longer than the slowest run. Default 30 s. */
  readonly lease?: Duration.DurationInput
  /** How long a key is remembered; must outlive redelivery and replay. Default 1 day. */
  readonly retention?: Duration.DurationInput
}

const strategyOf = <A>(key: Options<A>["key"]): KeyStrategy<A> =>
  key === undefined || key === "envelopeId" ? byEnvelopeId : key === "payloadHash" ? byPayloadHash : key

/** Makes a handler idempotent over the `IdempotencyStore` in context (stage `idempotency`). */
export const idempotent = <A>(options: Options<A> = {}) => {
  const strategy = strategyOf(options.key)
  const namespace = options.namespace ?? ""
  const claimOptions: Store.ClaimOptions & Store.WaitOptions = {
    lease: options.lease ?? Duration.seconds(30),
    retention: options.retention ?? Store.defaultRetention,
    ...(options.onInProgress !== undefined ? { onInProgress: options.onInProgress } : {}),
    ...(options.maxWait !== undefined ? { maxWait: options.maxWait } : {})
  }
  return <E, R>(
    handler: Handler.Handler<A, E, R>
  ): Handler.Handler<
    A,
    E | Store.IdempotencyStoreError | Store.InProgressError | Store.LeaseLostError,
    R | Store.IdempotencyStore
  > =>
    Handler.withStage("idempotency", handler, (envelope: Envelope.Envelope<A>) =>
      Effect.gen(function*() {
        const store = yield* Store.IdempotencyStore
        const key = namespace + strategy(envelope)
        const claim = yield* Store.claimOrWait(key, claimOptions)
        if (claim._tag === "Completed") {
          return yield* Effect.logDebug("duplicate skipped: already completed").pipe(Effect.annotateLogs({ key }))
        }
        yield* Effect.onError(handler(envelope), () => Store.releaseQuietly(store, key, claim.token))
        yield* Store.completeObserved(store, key, claim.token, null)
      }))
}
