/**
 * Keeps secrets, signatures and user-marked fields out of span attributes, span events and logs.
 *
 * Instrumentation here never copies headers or payloads wholesale: attributes are built from an explicit
 * list. This module is the second line: every attribute and log annotation passes {@link isSensitive}, and
 * {@link layerLogger} masks sensitive annotations on Effect's loggers (the default one and the one that turns
 * logs into span events).
 */
import { FiberRef, FiberRefs, HashMap, Layer, Logger } from "effect"
import { globalValue } from "effect/GlobalValue"

/** What replaces a sensitive value. */
export const redacted = "[REDACTED]"

/** Name fragments that mark a key as sensitive whatever the user says (case and separators ignored). */
export const defaultSensitive: ReadonlyArray<string> = [
  "secret",
  "signature",
  "password",
  "passwd",
  "token",
  "authorization",
  "apikey",
  "privatekey",
  "cookie",
  "credential",
  "whsec"
]

const normalise = (key: string) => key.toLowerCase().replace(/[^a-z0-9]/g, "")

/** Keys the user marked sensitive for the current fiber (exact names, compared case- and separator-insensitively). */
export const currentSensitiveKeys: FiberRef.FiberRef<ReadonlyArray<string>> = globalValue(
  Symbol.for("@bulwark/core/Redaction/currentSensitiveKeys"),
  () => FiberRef.unsafeMake<ReadonlyArray<string>>([])
)

/** Marks more keys sensitive for everything the layer's fibers do. */
export const layerSensitiveKeys = (keys: ReadonlyArray<string>): Layer.Layer<never> =>
  Layer.fiberRefLocallyScopedWith(currentSensitiveKeys, (current) => [...current, ...keys])

/** True when `key` names a secret, a signature or a field in `extra`. */
export const isSensitive = (key: string, extra: ReadonlyArray<string> = []): boolean => {
  const k = normalise(key)
  return defaultSensitive.some((fragment) => k.includes(fragment)) || extra.some((name) => normalise(name) === k)
}

/** `record` without its sensitive entries. */
export const omitSensitive = <V>(record: Readonly<Record<string, V>>, extra: ReadonlyArray<string> = []): Record<string, V> => {
  const out: Record<string, V> = {}
  for (const [key, value] of Object.entries(record)) {
    if (!isSensitive(key, extra)) out[key] = value
  }
  return out
}

const redactAnnotations = (annotations: HashMap.HashMap<string, unknown>, extra: ReadonlyArray<string>) =>
  HashMap.map(annotations, (value, key) => isSensitive(key, extra) ? redacted : value)

/** A logger that masks sensitive annotations before handing the entry to `logger`. */
export const redacting = <Message, Output>(logger: Logger.Logger<Message, Output>): Logger.Logger<Message, Output> =>
  Logger.make((options) =>
    logger.log({
      ...options,
      annotations: redactAnnotations(options.annotations, FiberRefs.getOrDefault(options.context, currentSensitiveKeys))
    })
  )

/** Replaces Effect's default logger and span-event logger with redacting versions. */
export const layerLogger: Layer.Layer<never> = Layer.merge(
  Logger.replace(Logger.defaultLogger, redacting(Logger.defaultLogger)),
  Logger.replace(Logger.tracerLogger, redacting(Logger.tracerLogger))
)
