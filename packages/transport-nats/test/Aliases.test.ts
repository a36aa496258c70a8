// The driver's module was renamed `NatsTransport` (like AmqpTransport, RedisTransport, PostgresTransport); the old
// `Nats` name and `ConnectionError` stay as deprecated aliases of the same things.
import { expect, it } from "@effect/vitest"
import { Nats, NatsTransport } from "../src/index.js"

it("Nats is NatsTransport, and ConnectionError is NatsConnectionError", () => {
  expect(Nats.layer).toBe(NatsTransport.layer)
  expect(Nats.make).toBe(NatsTransport.make)
  expect(NatsTransport.ConnectionError).toBe(NatsTransport.NatsConnectionError)
  expect(new NatsTransport.NatsConnectionError({ servers: [], cause: "x" } as never)._tag).toBe("NatsConnectionError")
  expect(typeof NatsTransport.layerConfig).toBe("function")
})
