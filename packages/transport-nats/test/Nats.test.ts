import { Delivery, Envelope, Failure, Pipeline } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Chunk, ConfigProvider, Duration, Effect, Exit, Fiber, Layer, Option, Ref, Schema, Scope, Stream } from "effect"
import { connect } from "nats"
import { NatsTransport } from "../src/index.js"
import { closedPort, deleteStreams, natsUrl, startSilentServer, uniquePrefix } from "./support.js"

const prefix = uniquePrefix("driver")
afterAll(async () => {
  await deleteStreams(prefix)
})

const encoder = new TextEncoder()
const decoder = new TextDecoder()
let counter = 0
const topicName = (label: string) => `${label}-${Date.now().toString(36)}-${(counter++).toString(36)}`

const message = (id: string, key = "", headers: Record<string, string> = {}): Transport.OutgoingMessage => ({
  id,
  key,
  payload: encoder.encode(`payload of ${id}`),
  headers
})

const transport = (options: NatsTransport.Options = {}) => NatsTransport.make({ servers: natsUrl, prefix, ackWait: "1 second", ...options })

const takeN = (stream: Stream.Stream<Delivery.Delivery, Transport.SubscribeError>, n: number) =>
  stream.pipe(Stream.take(n), Stream.runCollect, Effect.map(Chunk.toReadonlyArray), Effect.timeout("20 seconds"))

const nothingWithin = (stream: Stream.Stream<Delivery.Delivery, Transport.SubscribeError>, period: Duration.DurationInput) =>
  Stream.runHead(stream).pipe(Effect.timeout(period), Effect.option, Effect.map(Option.isNone))

/** Stream state read with a separate connection, as an operator would. */
const streamState = (stream: string) =>
  Effect.promise(async () => {
    const nc = await connect({ servers: natsUrl })
    try {
      const jsm = await nc.jetstreamManager()
      return (await jsm.streams.info(stream)).state
    } finally {
      await nc.close()
    }
  })

describe("NATS transport: start-up", () => {
  it.live("an unreachable server is a typed error at start, not a hang", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(() => closedPort())
      const started = Date.now()
      // connectRetry 0: fail at the first refusal (Startup.fault.test.ts covers waiting for a server).
      const error = yield* NatsTransport.make({ servers: `nats://127.0.0.1:${port}`, connectTimeout: "2 seconds", connectRetry: 0 }).pipe(
        Effect.scoped,
        Effect.flip
      )
      expect(error._tag).toBe("NatsConnectionError")
      expect(error.message).toContain(`127.0.0.1:${port}`)
      expect(Date.now() - started).toBeLessThan(15_000)
    }))

  it.live("a server that accepts but never answers fails after the connect timeout", () =>
    Effect.gen(function*() {
      const silent = yield* Effect.acquireRelease(Effect.promise(() => startSilentServer()), (s) => Effect.promise(() => s.close()))
      const error = yield* NatsTransport.make({ servers: silent.url, connectTimeout: "500 millis", connectRetry: 0 }).pipe(Effect.scoped, Effect.flip)
      expect(error._tag).toBe("NatsConnectionError")
    }).pipe(Effect.scoped))

  it.live("unusable options are a typed error before connecting", () =>
    Effect.gen(function*() {
      const badPrefix = yield* NatsTransport.make({ servers: natsUrl, prefix: "has_underscore" }).pipe(Effect.scoped, Effect.flip)
      expect(badPrefix._tag).toBe("NatsOptionsError")
      const badExpires = yield* NatsTransport.make({ servers: natsUrl, pullExpires: "10 millis", maxDeliver: 0 }).pipe(Effect.scoped, Effect.flip)
      expect(badExpires.message).toContain("pullExpires")
      expect(badExpires.message).toContain("maxDeliver")
    }))

  it.live("layerConfig reads the connection and knobs from configuration", () =>
    Effect.gen(function*() {
      const subscriber = yield* Transport.Subscriber
      const publisher = yield* Transport.Publisher
      expect(Duration.toMillis(subscriber.features.visibilityTimeout)).toBe(2_000)
      expect(Duration.toMillis(subscriber.features.dedupeWindow!)).toBe(60_000)
      expect(subscriber.features).toMatchObject({ orderedPerKey: false, persistent: true, consumerGroups: true, delayedNack: true })
      const topic = topicName("config")
      yield* publisher.publish(topic, [message("cfg-1")])
      const [got] = yield* takeN(subscriber.subscribe(topic), 1)
      expect(got!.message.id).toBe("cfg-1")
      yield* got!.ack
    }).pipe(
      Effect.provide(NatsTransport.layerConfig().pipe(
        Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([
          ["BULWARK_NATS_URL", natsUrl],
          ["BULWARK_NATS_PREFIX", prefix],
          ["BULWARK_NATS_ACK_WAIT", "2 seconds"],
          ["BULWARK_NATS_DEDUPE_WINDOW", "1 minute"]
        ]))))
      ))
    ))

  it.live("layerConfig defaults to the local server and fails typed when it is not there", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(() => closedPort())
      const exit = yield* Layer.build(NatsTransport.layerConfig({ connectTimeout: "1 second", connectRetry: 0 })).pipe(
        Effect.scoped,
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["BULWARK_NATS_URL", `nats://127.0.0.1:${port}`]]))),
        Effect.exit
      )
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isFailure(exit)) expect(String(exit.cause)).toContain("NatsConnectionError")
    }))
})

describe("NATS transport: JetStream behaviour", () => {
  it.live("topics with dots, dashes and other characters round-trip with key and headers", () =>
    Effect.gen(function*() {
      const nats = yield* transport()
      const base = topicName("orders")
      const topics = [`${base}.created.v1`, `${base}-eu`, `${base} ü/x`]
      for (const topic of topics) {
        yield* nats.publish(topic, [message(`${topic}#1`, "customer 42", { "correlation-id": "c-1", tracestate: "a=b,c=d" })])
      }
      for (const topic of topics) {
        const [got] = yield* takeN(nats.subscribe(topic), 1)
        expect(got!.message).toMatchObject({ id: `${topic}#1`, topic, key: "customer 42", headers: { "correlation-id": "c-1", tracestate: "a=b,c=d" } })
        expect(decoder.decode(got!.message.payload)).toBe(`payload of ${topic}#1`)
        yield* got!.ack
      }
    }).pipe(Effect.scoped))

  it.live("a repeated message id within the dedupe window is stored once", () =>
    Effect.gen(function*() {
      const nats = yield* transport()
      const topic = topicName("dedupe")
      yield* nats.publish(topic, [message("same-id"), message("other-id")])
      yield* nats.publish(topic, [message("same-id")])
      const names = nats.names(topic) as { stream: string }
      expect((yield* streamState(names.stream)).messages).toBe(2)
      const stream = nats.subscribe(topic)
      const got = yield* takeN(stream, 2)
      expect(got.map((d) => d.message.id).sort()).toEqual(["other-id", "same-id"])
      yield* Effect.forEach(got, (d) => d.ack)
      expect(yield* nothingWithin(stream, "1500 millis")).toBe(true)
    }).pipe(Effect.scoped))

  it.live("with dedupeWindow 0 a repeated id is stored again and keeps its id (a dead-letter replay must not vanish)", () =>
    Effect.gen(function*() {
      const nats = yield* transport({ dedupeWindow: 0 })
      const topic = topicName("nodedupe")
      yield* nats.publish(topic, [message("same-id")])
      yield* nats.publish(topic, [message("same-id")])
      const names = nats.names(topic) as { stream: string }
      expect((yield* streamState(names.stream)).messages).toBe(2)
      const got = yield* takeN(nats.subscribe(topic), 2)
      expect(got.map((d) => d.message.id)).toEqual(["same-id", "same-id"])
      expect(got.every((d) => Object.keys(d.message.headers).every((name) => name.toLowerCase() !== "bulwark-id"))).toBe(true)
      yield* Effect.forEach(got, (d) => d.ack)
    }).pipe(Effect.scoped))

  it.live("a message delivered more than maxDeliver times without settling is dead-lettered by the driver", () =>
    Effect.gen(function*() {
      const nats = yield* transport({ maxDeliver: 2 })
      const topic = topicName("poison")
      yield* nats.publish(topic, [message("poison-1", "k", { "correlation-id": "p" })])
      const attempts: Array<number> = []
      // A consumer that takes every delivery and never settles it, as one that crashes on the message would.
      const stuck = yield* nats.subscribe(topic).pipe(
        Stream.runForEach((d) => Effect.sync(() => attempts.push(d.attempt))),
        Effect.fork
      )
      const [dead] = yield* takeN(nats.subscribe(Delivery.deadLetterTopic(topic)), 1)
      yield* Fiber.interrupt(stuck)
      expect(attempts).toEqual([1, 2])
      expect(dead!.message.id).toBe("poison-1")
      expect(dead!.message.headers["correlation-id"]).toBe("p")
      const reason = Delivery.readDeadLetterReason(dead!.message.headers)
      expect(reason?.category).toBe("timeout")
      expect(reason?.error.tag).toBe("MaxDeliverExceeded")
      expect(reason?.attempts).toBe(3)
      yield* dead!.ack
      expect(yield* nothingWithin(nats.subscribe(topic), "1500 millis")).toBe(true)
    }).pipe(Effect.scoped))

  it.live("what NATS cannot carry is a typed publish error and nothing is published", () =>
    Effect.gen(function*() {
      const nats = yield* transport()
      const topic = topicName("invalid")
      const cases: Array<Transport.OutgoingMessage> = [
        message("bad-1", "", { "x-multi": "line\nbreak" }),
        message("bad-2", "", { "Nats-Expected-Stream": "other" }),
        message("bad-3", "", { "bad header": "v" }),
        message("bad-4", "", { "x-padded": " v " }),
        message("bad-5", "key\r\n")
      ]
      for (const bad of cases) {
        const error = yield* nats.publish(topic, [message("good-before"), bad]).pipe(Effect.flip)
        expect(error._tag).toBe("PublishError")
        expect((error.cause as { _tag: string })._tag).toBe("NatsInvalidMessageError")
      }
      const emptyTopic = yield* nats.publish("", [message("x")]).pipe(Effect.flip)
      expect((emptyTopic.cause as { _tag: string })._tag).toBe("NatsInvalidMessageError")
      // Validation happens before anything is sent: the first, valid message of each batch was not published either.
      yield* nats.publish(topic, [message("good-after")])
      const [only] = yield* takeN(nats.subscribe(topic), 1)
      expect(only!.message.id).toBe("good-after")
      yield* only!.ack
    }).pipe(Effect.scoped))

  it.live("messages survive the connection: published by one, consumed by a later one, by every group", () =>
    Effect.gen(function*() {
      const topic = topicName("persist")
      yield* Effect.scoped(Effect.flatMap(transport(), (nats) => nats.publish(topic, [message("p-1"), message("p-2")])))
      const later = yield* transport()
      for (const group of ["billing", "audit"]) {
        const got = yield* takeN(later.subscribe(topic, { group }), 2)
        expect(got.map((d) => d.message.id).sort()).toEqual(["p-1", "p-2"])
        yield* Effect.forEach(got, (d) => d.ack)
      }
    }).pipe(Effect.scoped))

  it.live("with confirmAcks an ack is confirmed by the server and the message is gone", () =>
    Effect.gen(function*() {
      const nats = yield* transport({ confirmAcks: true })
      const topic = topicName("confirm")
      yield* nats.publish(topic, [message("c-1")])
      const stream = nats.subscribe(topic)
      const [got] = yield* takeN(stream, 1)
      yield* got!.ack
      // Settling twice is harmless, as in the memory transport.
      yield* got!.ack
      expect(yield* nothingWithin(stream, "1500 millis")).toBe(true)
    }).pipe(Effect.scoped))

  it.live("a Pipeline over NATS acks, retries a transient failure after a delayed nack and dead-letters the rest", () =>
    Effect.gen(function*() {
      const nats = yield* transport()
      const topic = topicName("pipeline")
      const Order = Schema.Struct({ n: Schema.Number })
      const encode = Envelope.encode(Order)
      const envelopes = yield* Effect.forEach([1, 2, 3], (n) =>
        Envelope.make({ type: "order.placed", source: "test", subject: `order-${n}`, data: { n } }))
      const outgoing = yield* Effect.forEach(envelopes, (envelope) =>
        Effect.map(encode(envelope), (payload) => ({ id: envelope.id, key: envelope.subject, payload, headers: {} })))
      yield* nats.publish(topic, [...outgoing, message("not-an-envelope")])

      const seen = new Map<number, Array<number>>()
      const handler = (envelope: Envelope.Envelope<{ readonly n: number }>) =>
        Effect.suspend((): Effect.Effect<void, Failure.TransientError | Failure.PermanentError> => {
          seen.set(envelope.data.n, [...(seen.get(envelope.data.n) ?? []), envelope.attempt])
          if (envelope.data.n === 2 && envelope.attempt === 1) {
            return Effect.fail(new Failure.TransientError({ category: "dependency", message: "flaky downstream" }))
          }
          if (envelope.data.n === 3) return Effect.fail(new Failure.PermanentError({ category: "auth", message: "forbidden" }))
          return Effect.void
        })
      const outcomes = yield* Ref.make<ReadonlyArray<Pipeline.Outcome>>([])
      const running = yield* Effect.fork(Pipeline.run(nats.subscribe(topic), handler, {
        schema: Order,
        redeliveryDelay: () => Duration.millis(200),
        onSettled: (settled) => Ref.update(outcomes, (all) => [...all, settled.outcome])
      }))
      const dead = yield* takeN(nats.subscribe(Delivery.deadLetterTopic(topic)), 2)
      yield* Effect.forEach(dead, (d) => d.ack)
      while ((yield* Ref.get(outcomes)).filter((o) => o === "acked").length < 2) yield* Effect.sleep("50 millis")
      yield* Fiber.interrupt(running)

      expect([...(yield* Ref.get(outcomes))].sort()).toEqual(["acked", "acked", "dead-lettered", "dead-lettered", "nacked"])
      expect(seen.get(2)).toEqual([1, 2])
      const reasons = dead.map((d) => [d.message.id, Delivery.readDeadLetterReason(d.message.headers)?.category]).sort()
      expect(reasons).toEqual([[envelopes[2]!.id, "auth"], ["not-an-envelope", "schema"]].sort())
    }).pipe(Effect.scoped))

  it.live("the connection is closed when the scope closes", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const nats = yield* transport().pipe(Scope.extend(scope))
      expect(nats.connection.isClosed()).toBe(false)
      yield* Scope.close(scope, Exit.void)
      expect(nats.connection.isClosed()).toBe(true)
    }))
})
