/**
 * W3C trace context carried inside messages: `@bulwark/core`'s `TraceContext`, re-exported for the code that
 * imported it from here. Every Bulwark transport, the outbox and the dead-letter store already write and read
 * it; use these for transports or messages Bulwark does not handle.
 */
export {
  currentHeaders,
  extract,
  formatTraceparent,
  headersOf,
  inject,
  linkTo,
  parseTraceparent,
  type TraceParent,
  withRemoteParent
} from "@bulwark/core/TraceContext"
