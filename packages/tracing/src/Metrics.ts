/**
 * The metrics Bulwark reports, in one place. Names follow Prometheus conventions (`_total`, unit suffixes);
 * the OpenTelemetry exporter turns them into OTLP sums, gauges and histograms.
 *
 * Some are defined by the package whose behaviour they count and are re-exported here; the rest are updated by
 * this package's instrumentation.
 */
import * as Breaker from "@bulwark/circuit-breaker/Breaker"
import * as IdempotencyStore from "@bulwark/idempotency/IdempotencyStore"
import * as Outbox from "@bulwark/outbox/Outbox"
import * as Retry from "@bulwark/retry/Retry"
import { Metric, MetricBoundaries } from "effect"

/** Events accepted into the system: webhooks persisted and messages handed to a handler (tag `stage`). */
export const eventsReceived = Metric.counter("bulwark_events_received_total", {
  description: "Events received, by stage (webhook, consume) and destination"
})

/** Duplicates suppressed by idempotency (a claim that found the key completed). */
export const duplicatesSuppressed = Metric.counter("bulwark_duplicates_suppressed_total", {
  description: "Deliveries skipped because idempotency found them already completed"
})

/** Duplicates found by the idempotency store itself, by state (re-exported from `@bulwark/idempotency`). */
export const idempotencyHits = IdempotencyStore.hitsTotal

/** Retries made by the retry middleware (re-exported from `@bulwark/retry`). */
export const retries = Retry.retriesTotal

/** Redeliveries seen by consumers (deliveries with attempt > 1). */
export const redeliveries = Metric.counter("bulwark_redeliveries_total", {
  description: "Deliveries that were not the first delivery of their message"
})

/** Breaker state: 0 closed, 1 open, 2 half-open, 3 isolated, 4 disabled (re-exported from `@bulwark/circuit-breaker`). */
export const breakerState = Breaker.stateGauge

/** Breaker transitions by from/to (re-exported from `@bulwark/circuit-breaker`). */
export const breakerTransitions = Breaker.transitionsTotal

/** Messages dead-lettered, by destination and category. */
export const deadLettered = Metric.counter("bulwark_dead_lettered_total", {
  description: "Messages moved to a dead-letter store or topic"
})

/** Dead-letter entries not yet replayed. */
export const dlqDepth = Metric.gauge("bulwark_dlq_depth", {
  description: "Dead-letter entries not yet replayed"
})

/** Outbox rows not yet published (re-exported from `@bulwark/outbox`; the relay refreshes it). */
export const outboxBacklog = Outbox.backlogGauge

/** Age of the oldest unpublished outbox row in ms (re-exported from `@bulwark/outbox`). */
export const outboxLag = Outbox.lagGauge

/** Handler duration in seconds, one observation per handled delivery (tags `destination`, `outcome`). */
export const handlerDuration = Metric.histogram(
  "bulwark_handler_duration_seconds",
  MetricBoundaries.fromIterable([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]),
  "Time a handler took to settle one delivery"
)
