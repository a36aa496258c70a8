/** Per-endpoint circuit breaker used by the sender. */
export * as Breaker from "./Breaker.js"
/** The durable webhook sender: deliveries stored, claimed with fencing tokens, retried on a schedule. */
export * as Dispatcher from "./Dispatcher.js"
/** The dispatcher's store port (drivers: `DispatchStore/Memory`, `DispatchStore/Sql`). */
export * as DispatchStore from "./DispatchStore.js"
/** The dispatch store in process memory. */
export * as MemoryDispatchStore from "./DispatchStore/Memory.js"
/** The HTTP egress of the sender and the dispatcher (replaceable, e.g. by a simulated endpoint). */
export * as HttpEgress from "./HttpEgress.js"
/** Fast-ack HTTP ingress. */
export * as Ingress from "./Ingress.js"
/** The keyring of active secrets per source. */
export * as Keyring from "./Keyring.js"
/** Replay / duplicate detection port and its memory driver. */
export * as ReplayGuard from "./ReplayGuard.js"
/** The signed egress sender. */
export * as Sender from "./Sender.js"
/** Signing and key generation. */
export * as Signing from "./Signing.js"
/** The SSRF guard. */
export * as Ssrf from "./Ssrf.js"
/** Signature verification (Standard Webhooks, Stripe, GitHub). */
export * as Verifier from "./Verifier.js"
/** Typed refusals. */
export * as WebhookError from "./WebhookError.js"
// The `bulwark webhook` command loads @effect/cli, so it is not in this barrel: "@bulwark/webhook/Cli".
