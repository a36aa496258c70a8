/**
 * Keeps secrets, signatures and user-marked fields out of span attributes, span events and logs:
 * `@bulwark/core`'s `Redaction`, re-exported beside the exporter wiring that applications configure.
 */
export {
  currentSensitiveKeys,
  defaultSensitive,
  isSensitive,
  layerLogger,
  layerSensitiveKeys,
  omitSensitive,
  redacted,
  redacting
} from "@bulwark/core/Redaction"
