/**
 * The metrics shared by several Bulwark packages, defined in `@bulwark/core` (`Telemetry`) and re-exported
 * here for the code that reads them. Each package updates its own; a package's own metrics (breaker, retry,
 * idempotency, outbox gauges) are exported by that package.
 */
import { Telemetry } from "@bulwark/core"

/** Events accepted into the system: webhooks persisted and messages handed to a handler (tags `stage`, `destination`). */
export const eventsReceived = Telemetry.eventsReceived

/** Duplicates suppressed by the webhook ingress or by idempotency (tag `stage`). */
export const duplicatesSuppressed = Telemetry.duplicatesSuppressed

/** Redeliveries seen by consumers (tag `destination`). */
export const redeliveries = Telemetry.redeliveries

/** Messages dead-lettered, counted once where it is decided (tags `destination`, `category`). */
export const deadLettered = Telemetry.deadLettered

/** Dead-letter entries not yet replayed (set by the dead-letter store and `DeadLetterStore.updateDepth`). */
export const dlqDepth = Telemetry.dlqDepth

/** Handler duration in seconds (tags `destination`, `outcome`). */
export const handlerDuration = Telemetry.handlerDuration

/** Publish duration in seconds (tags `destination`, `outcome`). */
export const publishDuration = Telemetry.publishDuration
