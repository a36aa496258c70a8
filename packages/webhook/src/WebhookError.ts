/**
 * Every way a webhook can be refused, as `Schema.TaggedError`s: they are sent back to the sender as HTTP
 * bodies and recorded in dead-letter reasons, so they must survive serialisation. Each error classifies
 * itself (Bulwark's `Failure`): a refused signature is a permanent `auth` failure — retrying it unchanged
 * cannot help — while a failed persist is transient so the sender tries again.
 */
import { Failure } from "@bulwark/core"
import { Schema } from "effect"

const permanentAuth: Failure.Verdict = Failure.verdict("permanent", "auth")
const permanentSchema: Failure.Verdict = Failure.verdict("permanent", "schema")

/** A header the scheme requires is absent. */
export class MissingHeader extends Schema.TaggedError<MissingHeader>()("MissingHeader", {
  header: Schema.String
}) {
  override get message(): string {
    return `missing header ${this.header}`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return permanentAuth
  }
}

/** A header is present but cannot be parsed (bad timestamp, bad base64, no version, a `.` in the id…). */
export class MalformedHeader extends Schema.TaggedError<MalformedHeader>()("MalformedHeader", {
  header: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `malformed header ${this.header}: ${this.detail}`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return permanentAuth
  }
}

/** Every signature carries a version this verifier does not implement (e.g. `v2`). */
export class UnsupportedVersion extends Schema.TaggedError<UnsupportedVersion>()("UnsupportedVersion", {
  versions: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `unsupported signature version(s): ${this.versions.join(", ")}`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return permanentAuth
  }
}

/** The signed timestamp is too far from now, in either direction (a replay or a skewed clock). */
export class TimestampOutOfTolerance extends Schema.TaggedError<TimestampOutOfTolerance>()("TimestampOutOfTolerance", {
  /** The signed timestamp, unix seconds. */
  timestamp: Schema.Number,
  /** The verifier's clock, unix seconds. */
  now: Schema.Number,
  /** The allowed skew, seconds. */
  toleranceSeconds: Schema.Number
}) {
  override get message(): string {
    const direction = this.timestamp < this.now ? "old" : "far in the future"
    return `timestamp ${this.timestamp} is too ${direction} (now ${this.now}, tolerance ${this.toleranceSeconds}s)`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return permanentAuth
  }
}

/** No signature verifies with any active key. */
export class NoMatchingSignature extends Schema.TaggedError<NoMatchingSignature>()("NoMatchingSignature", {
  /** How many signatures were tried. */
  signatures: Schema.Number,
  /** How many keys were tried. */
  keys: Schema.Number
}) {
  override get message(): string {
    return `no matching signature (${this.signatures} signature(s) against ${this.keys} key(s))`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return permanentAuth
  }
}

/** There is no usable key: the source is unknown to the keyring, or a configured secret cannot be decoded. */
export class UnknownKey extends Schema.TaggedError<UnknownKey>()("UnknownKey", {
  source: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `no usable key for ${this.source}: ${this.detail}`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return permanentAuth
  }
}

/** The webhook id was already seen within the replay window. */
export class Replayed extends Schema.TaggedError<Replayed>()("Replayed", {
  id: Schema.String
}) {
  override get message(): string {
    return `webhook ${this.id} was already received`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return permanentAuth
  }
}

/** Any reason a signature check refuses a request. */
export type VerificationError =
  | MissingHeader
  | MalformedHeader
  | UnsupportedVersion
  | TimestampOutOfTolerance
  | NoMatchingSignature
  | UnknownKey
  | Replayed

/** The schema of {@link VerificationError}, to decode a refusal read back from the wire. */
export const VerificationError = Schema.Union(
  MissingHeader,
  MalformedHeader,
  UnsupportedVersion,
  TimestampOutOfTolerance,
  NoMatchingSignature,
  UnknownKey,
  Replayed
)

const verificationTags = new Set<string>(
  ["MissingHeader", "MalformedHeader", "UnsupportedVersion", "TimestampOutOfTolerance", "NoMatchingSignature", "UnknownKey", "Replayed"]
)

/** Whether a value is one of the {@link VerificationError}s. */
export const isVerificationError = (u: unknown): u is VerificationError =>
  typeof u === "object" && u !== null && verificationTags.has((u as { _tag?: string })._tag ?? "")

/** The body exceeds the ingress size limit (HTTP 413). */
export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()("PayloadTooLarge", {
  limit: Schema.Number,
  /** The declared or observed size when known. */
  size: Schema.optional(Schema.Number)
}) {
  override get message(): string {
    return `body exceeds ${this.limit} bytes`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return permanentSchema
  }
}

/** The verified body is not what the route's schema expects (HTTP 400). */
export class MalformedPayload extends Schema.TaggedError<MalformedPayload>()("MalformedPayload", {
  detail: Schema.String
}) {
  override get message(): string {
    return `malformed payload: ${this.detail}`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return permanentSchema
  }
}

/**
 * The body did not arrive within the ingress's body timeout (HTTP 408, connection closed): a slow or stalled
 * sender must not hold a connection open. Nothing was acknowledged, so a real sender retries.
 */
export class BodyTimeout extends Schema.TaggedError<BodyTimeout>()("BodyTimeout", {
  timeoutMillis: Schema.Number,
  /** Bytes of the body received before the timeout. */
  received: Schema.Number
}) {
  override get message(): string {
    return `body not received within ${this.timeoutMillis} ms (${this.received} bytes arrived)`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("transient", "timeout")
  }
}

/** The same webhook id is being persisted by a concurrent request; the sender should retry (HTTP 409). */
export class InFlight extends Schema.TaggedError<InFlight>()("InFlight", {
  id: Schema.String
}) {
  override get message(): string {
    return `webhook ${this.id} is being processed; retry later`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("transient", "dependency")
  }
}

/**
 * The replay guard's store could not be consulted, so whether the request is a replay is unknown: it is
 * not acknowledged and the sender must retry (HTTP 503).
 */
export class ReplayCheckFailed extends Schema.TaggedError<ReplayCheckFailed>()("ReplayCheckFailed", {
  detail: Schema.String
}) {
  override get message(): string {
    return `the replay check could not be made: ${this.detail}`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("transient", "dependency")
  }
}

/** The event could not be persisted, so it was not acknowledged; the sender must retry (HTTP 503). */
export class PersistFailed extends Schema.TaggedError<PersistFailed>()("PersistFailed", {
  id: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `webhook ${this.id} could not be persisted: ${this.detail}`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("transient", "dependency")
  }
}
