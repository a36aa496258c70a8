/**
 * @deprecated The NATS driver's module is `NatsTransport` now (`@bulwark/transport-nats/NatsTransport`), named like
 * `AmqpTransport`, `RedisTransport` and `PostgresTransport`; this alias stays for existing imports.
 */
export * from "./NatsTransport.js"
