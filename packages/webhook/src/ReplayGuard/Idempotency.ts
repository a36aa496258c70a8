/**
 * The replay guard over an `IdempotencyStore` (memory, SQL, Redis): webhook ids are idempotency keys, so
 * dedupe survives restarts and is shared by every ingress instance over the same store. A claim is the
 * store's lease with a fencing token; the token is kept here between the claim and its commit or release,
 * which the ingress makes in the same request. The key is remembered for the `ttl` given at the claim (the
 * ingress's `dedupeTtl`), counted from the commit.
 */
import * as IdempotencyStore from "@bulwark/idempotency/IdempotencyStore"
import { Duration, Effect, Layer } from "effect"
import { type ClaimResult, ReplayGuard, ReplayGuardError } from "../ReplayGuard.js"

/** Settings of the adapter. */
export interface Options {
  /** Prepended to every key, to keep webhook ids apart from other idempotency keys. Default `"webhook:"`. */
  readonly prefix?: string
  /** How long a key is remembered when the claim names no `ttl`. Default 3 days (the ingress's `dedupeTtl`). */
  readonly ttl?: Duration.DurationInput
}

/** A replay guard over `store`. */
export const make = (store: IdempotencyStore.Service, options: Options = {}): ReplayGuard["Type"] => {
  const prefix = options.prefix ?? "webhook:"
  const defaultTtl = options.ttl ?? Duration.days(3)
  // Tokens of the claims this instance holds, by key, with their lease's end: a commit or release needs the
  // claim's token. A claim abandoned without either (its request interrupted) is forgotten after its lease.
  const tokens = new Map<string, { readonly token: number; readonly until: number }>()
  const forgetExpired = (now: number) => {
    if (tokens.size < 1_000) return
    for (const [key, held] of tokens) if (held.until <= now) tokens.delete(key)
  }
  const failed = (operation: ReplayGuardError["operation"], key: string) => (cause: unknown) =>
    new ReplayGuardError({ operation, key, cause })
  return ReplayGuard.of({
    claim: (key, lease, ttl) =>
      store.claim(prefix + key, { lease, retention: ttl ?? defaultTtl }).pipe(
        Effect.mapError(failed("claim", key)),
        Effect.map((claim): ClaimResult => {
          switch (claim._tag) {
            case "Fresh":
              forgetExpired(claim.leaseUntil - Duration.toMillis(Duration.decode(lease)))
              tokens.set(key, { token: claim.token, until: claim.leaseUntil })
              return "claimed"
            case "InProgress":
              return "in-flight"
            case "Completed":
              return "seen"
          }
        })
      ),
    commit: (key) =>
      Effect.suspend(() => {
        const token = tokens.get(key)?.token
        if (token === undefined) return Effect.fail(new ReplayGuardError({ operation: "commit", key, cause: "not claimed here" }))
        tokens.delete(key)
        // A lost lease means another instance took the id over: it is remembered either way, yet this
        // instance's claim outlived its lease, which the caller should hear about.
        return Effect.mapError(store.complete(prefix + key, token, true), failed("commit", key))
      }),
    release: (key) =>
      Effect.suspend(() => {
        const token = tokens.get(key)?.token
        if (token === undefined) return Effect.void
        tokens.delete(key)
        return store.release(prefix + key, token).pipe(
          // Someone else owns the key now: there is nothing of ours left to release.
          Effect.catchTag("LeaseLostError", () => Effect.void),
          Effect.mapError(failed("release", key))
        )
      })
  })
}

/** The replay guard over the `IdempotencyStore` in context. */
export const layer = (options: Options = {}): Layer.Layer<ReplayGuard, never, IdempotencyStore.IdempotencyStore> =>
  Layer.effect(ReplayGuard, Effect.map(IdempotencyStore.IdempotencyStore, (store) => make(store, options)))
