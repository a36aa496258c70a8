/** The NATS JetStream transport driver. */
export * as NatsTransport from "./NatsTransport.js"
/** @deprecated Renamed `NatsTransport`, as the other drivers are named; this alias stays for existing imports. */
export * as Nats from "./Nats.js"
