/**
 * The Postgres transport across a database restart, on a private PostgreSQL instance (never the shared one):
 * a consumer in the middle of a stream survives `pg_ctl restart -m immediate` and resumes by itself.
 */
import { Envelope, Supervise } from "@bulwark/core"
import { Database } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { type Duration, Effect, Fiber, Layer, Logger, LogLevel, Option, Schema, Stream } from "effect"
import * as PrivatePostgres from "../../sql/test/support/PrivatePostgres.js"
import * as PostgresTransport from "../src/PostgresTransport.js"

let pg: PrivatePostgres.PrivatePostgres

beforeAll(async () => {
  pg = await PrivatePostgres.start()
}, 60_000)

afterAll(async () => {
  await pg?.destroy()
}, 60_000)

const Payload = Schema.Struct({ n: Schema.Number })
const publish = Transport.publishEnvelopes(Payload)

const waitUntil = (label: string, condition: () => boolean, within: Duration.DurationInput) =>
  Effect.gen(function*() {
    while (!condition()) yield* Effect.sleep("50 millis")
  }).pipe(Effect.timeoutFail({ duration: within, onTimeout: () => new Error(`timed out waiting until ${label}`) }))

describe("Postgres transport on a restarting database", () => {
  it("a consumer survives a restart mid-stream, resumes by itself, and loses nothing", async () => {
    const total = 200
    const seen = new Set<number>()
    let seenAtRestart = 0
    const layer = PostgresTransport.layer({
      table: "faults_queue",
      visibilityTimeout: "2 seconds",
      pollInterval: "200 millis",
      batchSize: 10
    }).pipe(Layer.provideMerge(Database.layerPostgres({ url: pg.url, maxConnections: 6 })))

    const program = Effect.gen(function*() {
      const events = yield* Effect.forEach(Array.from({ length: total }, (_, n) => n), (n) =>
        Envelope.make({ type: "test.fault", source: "/faults", subject: `k${n % 20}`, data: { n } }))
      yield* publish("faults", events)
      const consumer = yield* Transport.consume(
        "faults",
        (envelope: Envelope.Envelope<{ readonly n: number }>) =>
          Effect.zipRight(Effect.sleep("10 millis"), Effect.sync(() => seen.add(envelope.data.n))),
        { schema: Payload, concurrency: 8 }
      ).pipe(Effect.fork)
      yield* waitUntil("a third consumed", () => seen.size >= total / 3, "20 seconds")
      seenAtRestart = seen.size
      yield* Effect.promise(() => pg.restart({ downMillis: 1_000 }))
      yield* waitUntil("everything consumed", () => seen.size === total, "25 seconds").pipe(Effect.ignore)
      const stillRunning = Option.isNone(yield* Fiber.poll(consumer))
      const health = yield* Supervise.health
      yield* Fiber.interrupt(consumer)
      return { stillRunning, health }
    })

    const { health, stillRunning } = await Effect.runPromise(
      Effect.scoped(Effect.provide(program, layer)).pipe(Logger.withMinimumLogLevel(LogLevel.Error))
    )
    expect(seenAtRestart).toBeLessThan(total)
    expect(stillRunning).toBe(true)
    expect(seen.size).toBe(total)
    expect(health.get("transport-postgres:faults_queue:faults:default")).toBe("up")
  }, 60_000)

  it("declares `persistent`, and keeps its word: what was published before a crash is delivered after it", async () => {
    const layer = PostgresTransport.layer({ table: "faults_persistent", pollInterval: "100 millis" })
      .pipe(Layer.provideMerge(Database.layerPostgres({ url: pg.url, maxConnections: 4 })))
    const published = Array.from({ length: 50 }, (_, n) => ({ id: `p-${n}`, key: `k${n % 5}`, payload: new Uint8Array([n]), headers: {} }))
    const program = Effect.gen(function*() {
      const subscriber = yield* Transport.Subscriber
      const publisher = yield* Transport.Publisher
      yield* publisher.publish("durable", published)
      // A crash: `pg_ctl restart -m immediate` (no checkpoint, recovery from the WAL).
      yield* Effect.promise(() => pg.restart())
      const received = new Set<string>()
      yield* subscriber.subscribe("durable").pipe(
        Stream.tap((delivery) => Effect.zipRight(delivery.ack, Effect.sync(() => received.add(delivery.message.id)))),
        Stream.takeUntil(() => received.size === published.length),
        Stream.runDrain,
        Effect.timeout("20 seconds")
      )
      return { persistent: subscriber.features.persistent, received }
    })
    const outcome = await Effect.runPromise(Effect.scoped(Effect.provide(program, layer)).pipe(Logger.withMinimumLogLevel(LogLevel.Error)))
    expect(outcome.persistent).toBe(true)
    expect([...outcome.received].sort()).toEqual(published.map((m) => m.id).sort())
  }, 60_000)
})
