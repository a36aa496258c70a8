/**
 * Issue 17: a process that starts while its NATS server is restarting waits for it (for `connectRetry`) instead
 * of failing at once; found by the chaos suite, where a relay restarted during a broker outage exited.
 * Runs on a private server (never the shared one), stopped by its pid afterwards.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Stream } from "effect"
import { NatsTransport } from "../src/index.js"
import * as PrivateNats from "./support/PrivateNats.js"

let nats: PrivateNats.PrivateNats

beforeAll(async () => {
  nats = await PrivateNats.start()
}, 60_000)

afterAll(async () => {
  await nats?.destroy()
}, 60_000)

const encoder = new TextEncoder()

describe("NATS transport: starting while the server is down", () => {
  it.live("make waits for a server that comes up within connectRetry, then works", () =>
    Effect.gen(function*() {
      yield* Effect.promise(() => nats.stop())
      const starting = yield* Effect.fork(NatsTransport.make({
        servers: nats.url,
        prefix: "startup",
        connectTimeout: "1 second",
        connectRetry: "30 seconds"
      }))
      yield* Effect.sleep("1500 millis")
      yield* Effect.promise(() => nats.start())
      const transport = yield* Fiber.join(starting)
      yield* transport.publish("late", [{ id: "m-1", key: "", payload: encoder.encode("m-1"), headers: {} }])
      const [delivery] = yield* transport.subscribe("late").pipe(Stream.take(1), Stream.runCollect, Effect.map((c) => [...c]))
      expect(delivery?.message.id).toBe("m-1")
      yield* delivery!.ack
    }).pipe(Effect.scoped), 60_000)

  it.live("gives up with a typed ConnectionError once connectRetry has passed", () =>
    Effect.gen(function*() {
      yield* Effect.promise(() => nats.stop())
      const started = Date.now()
      const error = yield* NatsTransport.make({ servers: nats.url, connectTimeout: "1 second", connectRetry: "2 seconds" }).pipe(
        Effect.scoped,
        Effect.flip
      )
      expect(error._tag).toBe("NatsConnectionError")
      // Waited for the server rather than failing at the first refusal.
      expect(Date.now() - started).toBeGreaterThanOrEqual(1_500)
    }).pipe(Effect.ensuring(Effect.promise(() => nats.start()))), 60_000)
})
