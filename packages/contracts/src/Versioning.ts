/**
 * Consumers that look at the contract version an envelope was written with (its CloudEvents `dataschema`,
 * see `Contract.producer(...).dataschema`): accept only some versions, or hand each version to its own
 * handler. A refused version is a permanent `schema` failure, so the pipeline dead-letters it whole, with
 * its `dataschema` inside, instead of retrying it.
 */
import { Failure, Handler } from "@bulwark/core"
import { Effect, Schema } from "effect"
import { parseDataschema } from "./Contract.js"

/** An envelope written with a contract version this consumer does not take. Permanent, category `schema`. */
export class UnsupportedContractVersion extends Schema.TaggedError<UnsupportedContractVersion>()("UnsupportedContractVersion", {
  envelopeId: Schema.String,
  /** The envelope's `dataschema`, `null` when it had none. */
  dataschema: Schema.NullOr(Schema.String),
  contract: Schema.String,
  accepted: Schema.Array(Schema.Int)
}) {
  override get message(): string {
    return `envelope ${this.envelopeId} was written with ${this.dataschema ?? "no dataschema"}; ` +
      `this consumer takes ${this.contract} v${this.accepted.join(", v")}`
  }

  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("permanent", "schema")
  }
}

/** What to do with an envelope that carries no `dataschema` (written before producers stamped one). */
export type Unversioned = "reject" | { readonly as: number }

/** The contract version of an envelope's `dataschema` for contract `id`, `undefined` when it names none (or another contract). */
export const versionOf = (id: string, dataschema: string | undefined): number | undefined => {
  const parsed = parseDataschema(dataschema)
  return parsed !== undefined && parsed.id === id ? parsed.version : undefined
}

/**
 * Middleware: the handler runs only for envelopes of contract `id` at one of `versions`; anything else fails
 * with {@link UnsupportedContractVersion}. `unversioned` says how to treat an envelope without `dataschema`
 * (default: as the lowest accepted version, since old producers did not stamp one).
 */
export const accept = (id: string, versions: ReadonlyArray<number>, options: { readonly unversioned?: Unversioned } = {}) => {
  const unversioned = options.unversioned ?? { as: Math.min(...versions) }
  // Stage-less middleware (`Handler.around`): it keeps the stages of the handler it wraps, so the pipeline
  // still checks their order.
  return Handler.around<UnsupportedContractVersion, never>((effect, envelope) => {
    const version = envelope.dataschema === undefined
      ? (unversioned === "reject" ? undefined : unversioned.as)
      : versionOf(id, envelope.dataschema)
    return version !== undefined && versions.includes(version)
      ? effect
      : Effect.fail(new UnsupportedContractVersion({ envelopeId: envelope.id, dataschema: envelope.dataschema ?? null, contract: id, accepted: versions }))
  })
}

/**
 * A handler that routes by contract version: each version of contract `id` to its own handler (an envelope
 * without `dataschema` to `unversioned`'s version, default the lowest). A version with no route fails with
 * {@link UnsupportedContractVersion}.
 */
export const route = <A, E, R>(
  id: string,
  routes: Readonly<Record<number, Handler.Handler<A, E, R>>>,
  options: { readonly unversioned?: Unversioned } = {}
): Handler.Handler<A, E | UnsupportedContractVersion, R> => {
  const versions = Object.keys(routes).map(Number).sort((a, b) => a - b)
  const unversioned = options.unversioned ?? { as: versions[0]! }
  return (envelope) => {
    const version = envelope.dataschema === undefined
      ? (unversioned === "reject" ? undefined : unversioned.as)
      : versionOf(id, envelope.dataschema)
    const handler = version === undefined ? undefined : routes[version]
    return handler !== undefined
      ? handler(envelope)
      : Effect.fail(new UnsupportedContractVersion({ envelopeId: envelope.id, dataschema: envelope.dataschema ?? null, contract: id, accepted: versions }))
  }
}
