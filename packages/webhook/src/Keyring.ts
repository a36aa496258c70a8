/**
 * The keyring: the active secrets of every webhook source. A source may have several active secrets at
 * once, which is how secrets rotate without downtime — add the new one, let senders switch, remove the old
 * one; any active secret verifies.
 */
import { Config, Context, Effect, Layer, Redacted, Ref } from "effect"
import { UnknownKey } from "./WebhookError.js"

/** The keyring port. */
export class Keyring extends Context.Tag("@bulwark/webhook/Keyring")<Keyring, {
  /** The active secrets of `source`, newest first; fails when the source has none. */
  readonly secrets: (source: string) => Effect.Effect<ReadonlyArray<string>, UnknownKey>
  /** Replaces the active secrets of `source`. */
  readonly set: (source: string, secrets: ReadonlyArray<string>) => Effect.Effect<void>
  /** Adds a secret to `source` (it becomes the newest, the one senders sign with first). */
  readonly add: (source: string, secret: string) => Effect.Effect<void>
  /** Retires a secret of `source`. */
  readonly remove: (source: string, secret: string) => Effect.Effect<void>
}>() {}

/** Creates an in-memory keyring from `source -> secrets`. */
export const make = (initial: Readonly<Record<string, ReadonlyArray<string>>> = {}): Effect.Effect<Context.Tag.Service<Keyring>> =>
  Effect.map(Ref.make<ReadonlyMap<string, ReadonlyArray<string>>>(new Map(Object.entries(initial))), (ref) => ({
    secrets: (source) =>
      Effect.flatMap(Ref.get(ref), (map) => {
        const secrets = map.get(source)
        return secrets === undefined || secrets.length === 0
          ? Effect.fail(new UnknownKey({ source, detail: "the keyring has no secret for this source" }))
          : Effect.succeed(secrets)
      }),
    set: (source, secrets) => Ref.update(ref, (map) => new Map(map).set(source, [...secrets])),
    add: (source, secret) =>
      Ref.update(ref, (map) => new Map(map).set(source, [secret, ...(map.get(source) ?? []).filter((s) => s !== secret)])),
    remove: (source, secret) =>
      Ref.update(ref, (map) => new Map(map).set(source, (map.get(source) ?? []).filter((s) => s !== secret)))
  }))

/** A keyring holding the given secrets. */
export const layer = (initial: Readonly<Record<string, ReadonlyArray<string>>> = {}): Layer.Layer<Keyring> =>
  Layer.effect(Keyring, make(initial))

/** The config key of a source's secrets: `WEBHOOK_<SOURCE>_SECRETS` (under the `BULWARK` prefix by default). */
export const configKey = (source: string): string => `${source.toUpperCase().replace(/[^A-Z0-9]/g, "_")}_SECRETS`

/** A source's secrets as comma-separated config, read as a redacted value so it is never logged. */
export const config = (source: string, prefix = "BULWARK_WEBHOOK_"): Config.Config<ReadonlyArray<string>> =>
  Config.map(Config.redacted(`${prefix}${configKey(source)}`), (value) =>
    Redacted.value(value).split(",").map((s) => s.trim()).filter((s) => s.length > 0))

/**
 * A keyring loaded through Effect `Config`: for each source, `BULWARK_WEBHOOK_<SOURCE>_SECRETS` holds its
 * active secrets, comma-separated (e.g. `BULWARK_WEBHOOK_STRIPE_SECRETS=whsec_new,whsec_old`).
 */
export const layerConfig = (sources: ReadonlyArray<string>, prefix?: string): Layer.Layer<Keyring, import("effect/ConfigError").ConfigError> =>
  Layer.effect(
    Keyring,
    Effect.flatMap(
      Effect.forEach(sources, (source) => Effect.map(config(source, prefix), (secrets) => [source, secrets] as const)),
      (entries) => make(Object.fromEntries(entries))
    )
  )
