import {
  ChangeMessageVisibilityCommand,
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  DeleteQueueCommand,
  GetQueueUrlCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SendMessageCommand,
  SQSClient
} from "@aws-sdk/client-sqs"
import { Delivery, Failure } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import * as Contract from "@bulwark/transport/Contract"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, FastCheck as fc, Fiber, Stream } from "effect"
import { createServer } from "node:net"
import { SqsTransport } from "../src/index.js"
import * as internal from "../src/internal/sqs.js"
import * as FaultProxy from "../../transport/test/support/FaultProxy.js"
import * as HandlerCache from "../../transport/test/support/HandlerCache.js"
import { credentials, type PrivateSqs, start } from "./support/PrivateSqs.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

let emulator: PrivateSqs
beforeAll(async () => {
  emulator = await start()
}, 60_000)
afterAll(async () => {
  await emulator?.destroy()
})

let counter = 0
const topicName = (label: string) => `test.${label}-${Date.now().toString(36)}-${(counter++).toString(36)}`

const message = (id: string, headers: Record<string, string> = {}, key = ""): Transport.OutgoingMessage => ({
  id,
  key,
  payload: encoder.encode(JSON.stringify({ id })),
  headers
})

const transport = (options: SqsTransport.Options = {}) =>
  SqsTransport.make({ endpoint: emulator.endpoint, clientConfig: { credentials }, visibilityTimeout: "2 seconds", ...options })

const takeN = (stream: Stream.Stream<Delivery.Delivery, Transport.SubscribeError>, n: number) =>
  Stream.take(stream, n).pipe(Stream.runCollect, Effect.map(Chunk.toReadonlyArray), Effect.timeout("30 seconds"))

const nothingWithin = (stream: Stream.Stream<Delivery.Delivery, Transport.SubscribeError>, period: Duration.DurationInput) =>
  Stream.runHead(stream).pipe(Effect.timeout(period), Effect.option, Effect.map((o) => o._tag === "None"))

describe("starting", () => {
  it.live("an endpoint nobody listens on is a typed error within the connect timeout, not a hang", () =>
    Effect.gen(function*() {
      const port = yield* Contract.closedPort
      const error = yield* SqsTransport.make({
        endpoint: `http://127.0.0.1:${port}`,
        clientConfig: { credentials, maxAttempts: 1 },
        connectTimeout: "2 seconds"
      }).pipe(Effect.scoped, Effect.flip, Effect.timeout("15 seconds"))
      expect(error._tag).toBe("SqsConnectionError")
      expect(error.message).toContain(`127.0.0.1:${port}`)
    }), 20_000)

  it.live("a password in the endpoint or the secret access key never shows in errors or logs", () =>
    Effect.gen(function*() {
      const port = yield* Contract.closedPort
      const password = Contract.testPassword()
      const texts = yield* Contract.visibleTexts(
        SqsTransport.make({
          endpoint: `http://user:${password}@127.0.0.1:${port}`,
          clientConfig: { credentials: { accessKeyId: "bulwark-test", secretAccessKey: password }, maxAttempts: 1 },
          connectTimeout: "2 seconds"
        }).pipe(Effect.scoped)
      )
      Contract.expectNoPassword(texts, password)
    }), 40_000)

  it.scopedLive("a server that accepts but never answers fails after the connect timeout", () =>
    Effect.gen(function*() {
      const silent = yield* Effect.acquireRelease(
        Effect.async<import("node:net").Server>((resume) => {
          const server = createServer(() => {})
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.sync(() => server.close())
      )
      const port = (silent.address() as import("node:net").AddressInfo).port
      const started = Date.now()
      const error = yield* SqsTransport.make({ endpoint: `http://127.0.0.1:${port}`, clientConfig: { credentials }, connectTimeout: "1 second" })
        .pipe(Effect.scoped, Effect.flip, Effect.timeout("15 seconds"))
      expect(error._tag).toBe("SqsConnectionError")
      expect(Date.now() - started).toBeLessThan(10_000)
    }), 20_000)

  it.scopedLive("declares what FIFO and standard queues do", () =>
    Effect.gen(function*() {
      const fifo = yield* transport({ visibilityTimeout: "1500 millis" })
      expect(Duration.toMillis(fifo.features.visibilityTimeout)).toBe(2_000)
      expect(fifo.features.orderedPerKey).toBe(true)
      expect(fifo.features.consumerGroups).toBe(false)
      expect(Duration.toMinutes(fifo.features.dedupeWindow!)).toBe(5)
      const standard = yield* transport({ fifo: false })
      expect(standard.features.orderedPerKey).toBe(false)
      expect(standard.features.dedupeWindow).toBeUndefined()
    }))
})

describe("queues and messages", () => {
  it("queue names keep distinct topics apart and fit SQS's alphabet", () => {
    expect(internal.queueName("p-", "orders.paid", true)).toBe("p-orders_2epaid.fifo")
    expect(internal.queueName("p-", "orders_2epaid", false)).toBe("p-orders_5f2epaid")
    expect(internal.queueName("p-", "a.b", false)).not.toBe(internal.queueName("p-", "a_b", false))
  })

  it.scopedLive("a topic whose queue name would be too long is a PublishError / SubscribeError caused by InvalidName", () =>
    Effect.gen(function*() {
      const driver = yield* transport()
      const topic = "x".repeat(90)
      const published = yield* Effect.flip(driver.publish(topic, [message("n-1")]))
      expect(published.cause).toBeInstanceOf(SqsTransport.InvalidName)
      expect(Failure.isClassified(published.cause) && published.cause[Failure.ClassifiedTypeId].classification).toBe("permanent")
      const subscribed = yield* Effect.flip(Stream.runHead(driver.subscribe(topic)))
      expect(subscribed.cause).toBeInstanceOf(SqsTransport.InvalidName)
    }))

  it.scopedLive("a subscription naming another group than default is refused, not silently shared", () =>
    Effect.gen(function*() {
      const driver = yield* transport()
      const error = yield* Effect.flip(Stream.runHead(driver.subscribe(topicName("groups"), { group: "billing" })))
      expect(error._tag).toBe("SubscribeError")
      expect(error.cause).toBeInstanceOf(SqsTransport.GroupsUnsupported)
      const fine = yield* Stream.runHead(driver.subscribe(topicName("groups"), { group: "default" })).pipe(Effect.timeout("3 seconds"), Effect.option)
      expect(fine._tag).toBe("None")
    }))

  it.scopedLive("FIFO: the same message id published twice within the window is delivered once", () =>
    Effect.gen(function*() {
      const driver = yield* transport()
      const topic = topicName("dedupe")
      yield* driver.publish(topic, [message("d-1"), message("d-2")])
      yield* driver.publish(topic, [message("d-1")])
      const stream = driver.subscribe(topic)
      const got = yield* takeN(stream, 2)
      expect(got.map((d) => d.message.id).sort()).toEqual(["d-1", "d-2"])
      yield* Effect.forEach(got, (d) => d.ack)
      expect(yield* nothingWithin(stream, "2500 millis")).toBe(true)
    }))

  it.scopedLive("an empty payload and a message sent by another producer are delivered as they are", () =>
    Effect.gen(function*() {
      const driver = yield* transport({ fifo: false })
      const topic = topicName("foreign")
      yield* driver.publish(topic, [{ id: "empty-1", key: "", payload: new Uint8Array(0), headers: { h: "v" } }])
      const client = new SQSClient({ endpoint: emulator.endpoint, region: "us-east-1", credentials })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.destroy()))
      const { QueueUrl } = yield* Effect.promise(() =>
        client.send(new GetQueueUrlCommand({ QueueName: SqsTransport.queueName("bulwark-", topic, false) }))
      )
      const sent = yield* Effect.promise(() =>
        client.send(new SendMessageCommand({
          QueueUrl,
          MessageBody: "plain text body",
          MessageAttributes: { origin: { DataType: "String", StringValue: "elsewhere" } }
        }))
      )
      const got = yield* takeN(driver.subscribe(topic), 2)
      const empty = got.find((d) => d.message.id === "empty-1")!
      expect(empty.message.payload.length).toBe(0)
      expect(empty.message.headers).toEqual({ h: "v" })
      const foreign = got.find((d) => d.message.id !== "empty-1")!
      expect(foreign.message.id).toBe(sent.MessageId)
      expect(decoder.decode(foreign.message.payload)).toBe("plain text body")
      expect(foreign.message.headers).toEqual({ origin: "elsewhere" })
      yield* Effect.forEach(got, (d) => d.ack)
    }))

  it.prop(
    "encoding round-trips id, key, headers and payload",
    {
      id: fc.string({ minLength: 1, maxLength: 40 }),
      key: fc.string({ maxLength: 40 }),
      headers: fc.dictionary(fc.string({ minLength: 1, maxLength: 30 }), fc.string({ maxLength: 200 }), { maxKeys: 20 }),
      // Bytes (mostly not UTF-8) and text of any code points, control characters and U+FFFE included.
      payload: fc.oneof(fc.uint8Array({ maxLength: 200 }), fc.string({ unit: "binary", maxLength: 100 }).map((s) => encoder.encode(s))),
      fifo: fc.boolean()
    },
    ({ fifo, headers, id, key, payload }) => {
      const entry = internal.encode({ id, key, headers, payload }, fifo)
      const decoded = internal.decode("topic", { MessageId: "m", Body: entry.MessageBody, MessageAttributes: entry.MessageAttributes })
      expect(decoded.id).toBe(id)
      expect(decoded.key).toBe(key)
      expect(decoded.headers).toEqual(headers)
      expect([...decoded.payload]).toEqual([...payload])
      if (fifo) expect(entry.MessageDeduplicationId!.length).toBeLessThanOrEqual(128)
    }
  )
})

describe("body encoding", () => {
  const bytes = (...values: Array<number>) => Uint8Array.from(values)
  const entryOf = (payload: Uint8Array) => internal.encode({ id: "b-1", key: "k", headers: {}, payload }, false)
  const received = (entry: internal.SqsEntry) =>
    internal.decode("topic", { MessageId: "m", Body: entry.MessageBody, MessageAttributes: entry.MessageAttributes })

  it("a UTF-8 text payload is the body itself, without the encoding marker", () => {
    const text = `{"data":"caf\u00e9 \u4e2d\ufffd","tab":"\t","crlf":"\r\n"}`
    const entry = entryOf(encoder.encode(text))
    expect(entry.MessageBody).toBe(text)
    // Earlier versions decode a body without the marker as UTF-8 text: the same bytes.
    expect(entry.MessageAttributes[internal.Attributes.encoding]).toBeUndefined()
    expect(decoder.decode(received(entry).payload)).toBe(text)
    // A byte-order mark is payload too.
    const bom = bytes(0xef, 0xbb, 0xbf, 0x41)
    expect([...received(entryOf(bom)).payload]).toEqual([...bom])
  })

  it("bytes that are not UTF-8, text SQS refuses and the empty payload go in base64 with the marker", () => {
    // Characters beyond U+FFFF too: SQS documents them as allowed, emulators refuse them.
    for (const payload of [bytes(0xff, 0x00, 0x80), encoder.encode("a\u0001b"), encoder.encode("\uFFFF"), encoder.encode("\u{1F600}"), bytes()]) {
      const entry = entryOf(payload)
      expect(entry.MessageAttributes[internal.Attributes.encoding]?.StringValue).toBe("base64")
      expect(entry.MessageBody.length).toBeGreaterThan(0)
      expect([...received(entry).payload]).toEqual([...payload])
    }
  })

  it("a message as earlier versions wrote it (every payload in base64, with the marker) decodes", () => {
    const payload = encoder.encode(`{"order":7}`)
    const decoded = internal.decode("topic", {
      MessageId: "m",
      Body: Buffer.from(payload).toString("base64"),
      MessageAttributes: {
        "bulwark-id": { DataType: "String", StringValue: "old-1" },
        "bulwark-key": { DataType: "String", StringValue: "k" },
        "bulwark-encoding": { DataType: "String", StringValue: "base64" },
        "bulwark-headers": { DataType: "String", StringValue: `{"h":"v"}` }
      }
    })
    expect(decoded).toMatchObject({ id: "old-1", key: "k", headers: { h: "v" } })
    expect(decoder.decode(decoded.payload)).toBe(`{"order":7}`)
    const empty = internal.decode("topic", {
      Body: "=",
      MessageAttributes: { "bulwark-id": { DataType: "String", StringValue: "old-2" }, "bulwark-encoding": { DataType: "String", StringValue: "base64" } }
    })
    expect(empty.payload.length).toBe(0)
  })

  it("another producer's message: the body as text, its string attributes as headers", () => {
    const decoded = internal.decode("topic", {
      MessageId: "foreign-1",
      Body: "SGVsbG8=",
      MessageAttributes: {
        origin: { DataType: "String", StringValue: "elsewhere" },
        count: { DataType: "Number", StringValue: "3" },
        blob: { DataType: "Binary", BinaryValue: bytes(1) }
      }
    })
    expect(decoded.id).toBe("foreign-1")
    expect(decoded.key).toBe("")
    expect(decoder.decode(decoded.payload)).toBe("SGVsbG8=")
    expect(decoded.headers).toEqual({ origin: "elsewhere", count: "3" })
  })

  it.scopedLive("text, binary, text SQS refuses and earlier versions' messages all arrive through SQS byte for byte", () =>
    Effect.gen(function*() {
      const driver = yield* transport({ fifo: false })
      const topic = topicName("bodies")
      const payloads: Record<string, Uint8Array> = {
        text: encoder.encode(`{"note":"\u00e9\u4e2d\r\n\t"}`),
        astral: encoder.encode(`{"note":"\u{1F600}"}`),
        binary: bytes(0, 0xff, 0xfe, 0x80, 10),
        control: encoder.encode("a\u0000b\u001fc"),
        bom: bytes(0xef, 0xbb, 0xbf, 0x41)
      }
      yield* driver.publish(topic, Object.entries(payloads).map(([id, payload]) => ({ id, key: "", payload, headers: {} })))
      // As an earlier version sent it.
      const client = new SQSClient({ endpoint: emulator.endpoint, region: "us-east-1", credentials })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.destroy()))
      const { QueueUrl } = yield* Effect.promise(() =>
        client.send(new GetQueueUrlCommand({ QueueName: SqsTransport.queueName("bulwark-", topic, false) }))
      )
      payloads["old"] = encoder.encode(`{"v":1}`)
      yield* Effect.promise(() =>
        client.send(new SendMessageCommand({
          QueueUrl,
          MessageBody: Buffer.from(payloads["old"]!).toString("base64"),
          MessageAttributes: {
            "bulwark-id": { DataType: "String", StringValue: "old" },
            "bulwark-encoding": { DataType: "String", StringValue: "base64" }
          }
        }))
      )
      const got = yield* takeN(driver.subscribe(topic), 6)
      expect(Object.fromEntries(got.map((d) => [d.message.id, [...d.message.payload]]))).toEqual(
        Object.fromEntries(Object.entries(payloads).map(([id, payload]) => [id, [...payload]]))
      )
      yield* Effect.forEach(got, (d) => d.ack)
    }))
})

describe("SQS's own redrive", () => {
  it.scopedLive("a message received maxReceiveCount times is moved by SQS to the .dlq queue", () =>
    Effect.gen(function*() {
      const driver = yield* transport({ maxReceiveCount: 3, fifo: false })
      const topic = topicName("redrive")
      yield* driver.publish(topic, [message("r-1", { "correlation-id": "corr-r" })])
      const stream = driver.subscribe(topic)
      const attempts: Array<number> = []
      for (let i = 0; i < 3; i++) {
        const [d] = yield* takeN(stream, 1)
        attempts.push(d!.attempt)
        yield* d!.nack()
      }
      expect(attempts).toEqual([1, 2, 3])
      // SQS moves it when it would be received a fourth time; a live consumer of the source must not see it.
      const source = yield* Effect.fork(takeN(stream, 1))
      const [dead] = yield* takeN(driver.subscribe(Delivery.deadLetterTopic(topic)), 1)
      expect(dead!.message.id).toBe("r-1")
      expect(dead!.message.headers["correlation-id"]).toBe("corr-r")
      yield* dead!.ack
      yield* Effect.sleep("2500 millis")
      expect(source.unsafePoll()).toBeNull()
    }), 60_000)

  it.scopedLive("a queue created elsewhere with other attributes is used as it is", () =>
    Effect.gen(function*() {
      const topic = topicName("existing")
      const client = new SQSClient({ endpoint: emulator.endpoint, region: "us-east-1", credentials })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.destroy()))
      yield* Effect.promise(() =>
        client.send(new CreateQueueCommand({ QueueName: SqsTransport.queueName("bulwark-", topic, false), Attributes: { VisibilityTimeout: "7" } }))
      )
      const driver = yield* transport({ fifo: false })
      yield* driver.publish(topic, [message("e-1")])
      const [got] = yield* takeN(driver.subscribe(topic), 1)
      expect(got!.message.id).toBe("e-1")
      yield* got!.ack
    }))
})

describe("acks", () => {
  it.scopedLive("with confirmAcks a dead-letter and an ack complete once SQS answered", () =>
    Effect.gen(function*() {
      const driver = yield* transport({ confirmAcks: true, fifo: false })
      const topic = topicName("confirmed")
      yield* driver.publish(topic, [message("c-1"), message("c-2")])
      const stream = driver.subscribe(topic)
      const got = yield* takeN(stream, 2)
      yield* got[0]!.ack
      yield* got[1]!.deadLetter(
        new Delivery.DeadLetterReason({
          category: "schema",
          attempts: 1,
          error: new Failure.FailureRecord({ tag: "Bad", message: "bad", classification: "permanent", category: "schema" })
        })
      )
      expect(yield* nothingWithin(stream, "3 seconds")).toBe(true)
    }))
})

describe("publishing", () => {
  it.scopedLive("a publish larger than one SendMessageBatch goes in several calls: every message arrives, each key in order", () =>
    Effect.gen(function*() {
      const driver = yield* transport()
      const topic = topicName("batches")
      const sent = Array.from({ length: 25 }, (_, i) => message(`b-${i}`, {}, `k-${i % 3}`))
      yield* driver.publish(topic, sent)
      // FIFO holds a key's next message back until the one in flight is settled: acked as they come.
      const got = yield* driver.subscribe(topic).pipe(
        Stream.mapEffect((d) => Effect.as(d.ack, d)),
        Stream.take(25),
        Stream.runCollect,
        Effect.map(Chunk.toReadonlyArray),
        Effect.timeout("30 seconds")
      )
      expect(got.map((d) => d.message.id).sort()).toEqual(sent.map((m) => m.id).sort())
      for (const key of ["k-0", "k-1", "k-2"]) {
        expect(got.filter((d) => d.message.key === key).map((d) => d.message.id)).toEqual(
          sent.filter((m) => m.key === key).map((m) => m.id)
        )
      }
    }))
})

describe("the client", () => {
  it.scopedLive("the calls made per message (publish, receive, ack, nack) resolve the client's middleware once per command, not per call", () =>
    Effect.gen(function*() {
      const driver = yield* transport({ confirmAcks: true })
      const topic = topicName("cached")
      // The topic's queues are created (calls with an abort signal) before the watch starts counting.
      yield* driver.publish(topic, [message("warm", {}, "w")])
      const calls = yield* HandlerCache.watch(SQSClient, [
        SendMessageBatchCommand,
        ReceiveMessageCommand,
        DeleteMessageBatchCommand,
        ChangeMessageVisibilityCommand
      ])
      for (let round = 0; round < 3; round++) {
        yield* driver.publish(topic, Array.from({ length: 12 }, (_, i) => message(`m-${round}-${i}`, {}, `k-${i}`)))
      }
      const stream = driver.subscribe(topic)
      const first = yield* takeN(stream, 1)
      yield* first[0]!.nack()
      const rest = yield* driver.subscribe(topic).pipe(
        Stream.mapEffect((d) => Effect.as(d.ack, d)),
        Stream.take(37),
        Stream.runCollect,
        Effect.timeout("30 seconds")
      )
      expect(Chunk.size(rest)).toBe(37)
      // One nack: one visibility change.
      calls.expectResolvedOnce((command) => command === ChangeMessageVisibilityCommand ? 0 : 2)
    }))
})

describe("a queue deleted under a running consumer", () => {
  it.scopedLive("is created again by the consumer and by the next publish", () =>
    Effect.gen(function*() {
      const driver = yield* transport({ fifo: false })
      const topic = topicName("deleted")
      yield* driver.publish(topic, [message("before")])
      const stream = driver.subscribe(topic)
      const [first] = yield* takeN(stream, 1)
      yield* first!.ack
      const consumer = yield* Effect.fork(takeN(stream, 1))
      const client = new SQSClient({ endpoint: emulator.endpoint, region: "us-east-1", credentials })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.destroy()))
      const { QueueUrl } = yield* Effect.promise(() =>
        client.send(new GetQueueUrlCommand({ QueueName: SqsTransport.queueName("bulwark-", topic, false) }))
      )
      yield* Effect.promise(() => client.send(new DeleteQueueCommand({ QueueUrl })))
      yield* Effect.sleep("1500 millis")
      yield* driver.publish(topic, [message("after")])
      const [again] = yield* Fiber.join(consumer)
      expect(again!.message.id).toBe("after")
      yield* again!.ack
    }), 30_000)
})

describe("a service that stops answering", () => {
  it.scopedLive("a publish fails with a transient PublishError after socketTimeout and the retries, and publishes again once the service answers", () =>
    FaultProxy.expectStalledPublishFails({
      port: emulator.port,
      make: (port) =>
        SqsTransport.make({
          endpoint: `http://127.0.0.1:${port}`,
          clientConfig: { credentials, maxAttempts: 1 },
          fifo: false,
          waitTime: "0 seconds",
          socketTimeout: "1 second",
          reconnectTimeout: "3 seconds"
        }),
      topic: topicName("stall"),
      message: (id) => message(id),
      within: "20 seconds"
    }), 60_000)
})
