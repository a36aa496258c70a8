/**
 * Signature verification behind one interface for every scheme: Standard Webhooks (`v1` HMAC-SHA256 and
 * `v1a` ed25519), Stripe (`Stripe-Signature`) and GitHub (`X-Hub-Signature-256`).
 *
 * The guarantee: a request verifies only when one of its signatures was made with an active key over the
 * exact raw body bytes (and, where the scheme signs one, a timestamp within tolerance of `Clock` in either
 * direction). Every refusal is a typed {@link WebhookError.VerificationError}; nothing throws. Comparisons
 * are constant-time (`crypto.timingSafeEqual` on equal-length digests).
 */
import { Observe } from "@bulwark/core"
import { Clock, Duration, Effect, FiberRef } from "effect"
import * as internal from "./internal/crypto.js"
import { Keyring } from "./Keyring.js"
import { firstSeen, ReplayGuard } from "./ReplayGuard.js"
import { ReplayCheckFailed, Replayed, UnknownKey, type VerificationError } from "./WebhookError.js"

/** The signature schemes. */
export type Scheme = "standard" | "stripe" | "github"

/** Every scheme, for option parsing. */
export const schemes: ReadonlyArray<Scheme> = ["standard", "stripe", "github"]

/** Request headers (lower-case names, as node and @effect/platform provide them). */
export type Headers = internal.HeaderInput

/** What a verifier needs from a request: its headers and its raw body bytes. */
export interface Request {
  readonly headers: Headers
  readonly body: Uint8Array
}

/** A verified request: the scheme, the webhook id and the signed timestamp (unix seconds) when the scheme has them. */
export type Verified = internal.Verified

/** Verifies requests of one source. */
export interface Verifier {
  readonly scheme: Scheme
  readonly source: string
  /**
   * Verifies against `Clock`. `ReplayCheckFailed` only from {@link withReplayGuard}, when its guard's store
   * could not be consulted.
   */
  readonly verify: (request: Request) => Effect.Effect<Verified, VerificationError | ReplayCheckFailed>
  /**
   * The same check at a given time without Effect, when the verifier's keys are fixed (absent when they are
   * read from a service, e.g. {@link fromKeyring}). Callers on a hot path read `Clock` once and call it.
   */
  readonly verifyAt?: (request: Request, nowMillis: number) => Verified | VerificationError
}

/** Settings shared by every scheme. */
export interface Options {
  /** The source name used in errors and keyring look-ups. Default the scheme's name. */
  readonly source?: string
  /** How far the signed timestamp may be from now, either way. Default 5 minutes (Stripe and Standard Webhooks). */
  readonly tolerance?: Duration.DurationInput
}

/** The default timestamp tolerance. */
export const defaultTolerance: Duration.Duration = Duration.minutes(5)

const toleranceSeconds = (options: Options): number =>
  Math.floor(Duration.toMillis(options.tolerance ?? defaultTolerance) / 1000)

const decodeAll = (source: string, secrets: ReadonlyArray<string>): ReadonlyArray<internal.DecodedKey> | UnknownKey => {
  const keys: Array<internal.DecodedKey> = []
  for (let i = 0; i < secrets.length; i++) {
    const key = internal.decodeStandardKey(secrets[i]!)
    if (typeof key === "string") return new UnknownKey({ source, detail: `secret #${i + 1}: ${key}` })
    keys.push(key)
  }
  return keys
}

/**
 * The synchronous check at a given time, for callers that already hold the time and want no Effect
 * overhead per request (the ingress fast path, benchmarks). Answers the verified request or the error.
 */
export const check = (
  scheme: Scheme,
  source: string,
  secrets: ReadonlyArray<string>,
  request: Request,
  nowMillis: number,
  tolerance: number
): Verified | VerificationError => {
  switch (scheme) {
    case "standard": {
      const keys = decodeAll(source, secrets)
      return keys instanceof UnknownKey
        ? keys
        : internal.verifyStandard(source, keys, request.headers, request.body, nowMillis, tolerance)
    }
    case "stripe":
      return internal.verifyStripe(source, secrets, request.headers, request.body, nowMillis, tolerance)
    case "github":
      return internal.verifyGithub(source, secrets, request.headers, request.body)
  }
}

const isVerified = (result: Verified | VerificationError | ReplayCheckFailed): result is Verified => !("_tag" in result)

/** The id a request claims (before it is verified), for the `verified` event of a refusal. */
const claimedId = (scheme: Scheme, headers: Headers): string | undefined =>
  scheme === "standard"
    ? internal.header(headers, "webhook-id")
    : scheme === "github"
    ? internal.header(headers, "x-github-delivery")
    : undefined

/**
 * Announces a verification's result (`webhook` `verified`): `ok`, and the error's tag as `reason` when not.
 * The ingress calls it on its synchronous path; verifiers call it from `verify`.
 */
export const announce = (
  scheme: Scheme,
  source: string,
  request: Request,
  result: Verified | VerificationError | ReplayCheckFailed
): Effect.Effect<void> =>
  Observe.emitWith("webhook", "verified", () =>
    isVerified(result)
      ? { scheme, source, ok: true, webhookId: result.id }
      : { scheme, source, ok: false, reason: result._tag, webhookId: claimedId(scheme, request.headers) })

const lift = (
  scheme: Scheme,
  source: string,
  request: Request,
  result: Verified | VerificationError
): Effect.Effect<Verified, VerificationError> =>
  Effect.zipRight(announce(scheme, source, request, result), isVerified(result) ? Effect.succeed(result) : Effect.fail(result))

/**
 * A verifier for fixed secrets. For `standard` they are `whsec_…` (HMAC), `whpk_…` or `whsk_…` (ed25519);
 * for `stripe` and `github` the secret strings as the provider shows them.
 */
export const make = (scheme: Scheme, secrets: ReadonlyArray<string>, options: Options = {}): Verifier => {
  const source = options.source ?? scheme
  const tolerance = toleranceSeconds(options)
  const verifyAt = (request: Request, nowMillis: number) => check(scheme, source, secrets, request, nowMillis, tolerance)
  return {
    scheme,
    source,
    verify: (request) => Effect.flatMap(Clock.currentTimeMillis, (now) => lift(scheme, source, request, verifyAt(request, now))),
    verifyAt
  }
}

/** A Standard Webhooks verifier for fixed secrets. */
export const standard = (secrets: ReadonlyArray<string>, options: Options = {}): Verifier => make("standard", secrets, options)

/** A Stripe verifier for fixed endpoint secrets. */
export const stripe = (secrets: ReadonlyArray<string>, options: Options = {}): Verifier => make("stripe", secrets, options)

/** A GitHub verifier for fixed webhook secrets. */
export const github = (secrets: ReadonlyArray<string>, options: Options = {}): Verifier => make("github", secrets, options)

/**
 * A verifier that reads `source`'s active secrets from the {@link Keyring} on every request, so a rotation
 * takes effect at once.
 */
export const fromKeyring = (scheme: Scheme, source: string, options: Omit<Options, "source"> = {}): Effect.Effect<Verifier, never, Keyring> =>
  Effect.map(Keyring, (keyring) => {
    const tolerance = toleranceSeconds(options)
    return {
      scheme,
      source,
      verify: (request) =>
        Effect.flatMap(keyring.secrets(source), (secrets) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) =>
            lift(scheme, source, request, check(scheme, source, secrets, request, now, tolerance))))
    }
  })

const signatureHeaderOf: Record<Scheme, string> = {
  standard: "webhook-signature",
  stripe: "stripe-signature",
  github: "x-hub-signature-256"
}

/**
 * Adds replay protection: a verified id seen again within `ttl` fails with {@link Replayed}. This is how
 * GitHub deliveries (which sign no timestamp) are protected; keys are namespaced by source. A request
 * without an id (a GitHub delivery without `X-GitHub-Delivery`, any Stripe event) is keyed on its
 * verified signature header instead, so the same signed request is still refused the second time. One
 * `verified` event per request: the inner verifier's is held back and the guarded result announced instead.
 */
export const withReplayGuard = (verifier: Verifier, ttl: Duration.DurationInput = Duration.days(1)): Effect.Effect<Verifier, never, ReplayGuard> =>
  Effect.map(ReplayGuard, (guard): Verifier => {
    const guarded = (request: Request): Effect.Effect<Verified, VerificationError | ReplayCheckFailed> =>
      Effect.flatMap(verifier.verify(request), (verified) => {
        const signature = internal.header(request.headers, signatureHeaderOf[verifier.scheme]) ?? ""
        const [key, id] = verified.id !== undefined
          ? [`replay:${verifier.source}:${verified.id}`, verified.id]
          // A separate namespace, so a signature can never collide with a sender-chosen id.
          : [`replay:${verifier.source}:signature:${signature}`, signature]
        return Effect.flatMap(
          Effect.provideService(firstSeen(key, ttl), ReplayGuard, guard).pipe(
            // Whether it is a replay is unknown: refused as unavailable (retry), not as a bad signature.
            Effect.mapError((error) => new ReplayCheckFailed({ detail: error.message }))
          ),
          (first) => first ? Effect.succeed(verified) : Effect.fail(new Replayed({ id }))
        )
      })
    return {
      scheme: verifier.scheme,
      source: verifier.source,
      verify: (request) =>
        FiberRef.getWith(Observe.currentObservers, (observers) =>
          observers.length === 0 ? guarded(request) : Effect.locally(guarded(request), Observe.currentObservers, []).pipe(
            Effect.tapBoth({
              onSuccess: (verified) => announce(verifier.scheme, verifier.source, request, verified),
              onFailure: (error) => announce(verifier.scheme, verifier.source, request, error)
            })
          ))
    }
  })
