/** Envelope, CloudEvents encoding and decoding. */
export * as Envelope from "./Envelope.js"
/** The error taxonomy: classification and dead-letter category. */
export * as Failure from "./Failure.js"
/** Messages as transports carry them, and how a delivery is settled. */
export * as Delivery from "./Delivery.js"
/** Handlers, middleware and their checked order. */
export * as Handler from "./Handler.js"
/** Runs a handler over a stream of deliveries. */
export * as Pipeline from "./Pipeline.js"
/** A cheap hook through which the packages say what they did (simulator, tests, audit). */
export * as Observe from "./Observe.js"
