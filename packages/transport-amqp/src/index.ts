/** The RabbitMQ transport driver: `layer`, `layerConfig`, `make` and the `AmqpClient` service. */
export * as AmqpTransport from "./AmqpTransport.js"
