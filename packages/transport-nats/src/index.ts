/** The NATS JetStream transport driver. */
export * as Nats from "./Nats.js"
