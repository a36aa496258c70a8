import { Delivery, Failure } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import * as Contract from "@bulwark/transport/Contract"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { PubSub, v1 } from "@google-cloud/pubsub"
import { Chunk, Duration, Effect, FastCheck as fc, Fiber, Stream } from "effect"
import { createServer } from "node:net"
import { PubSubTransport } from "../src/index.js"
import * as internal from "../src/internal/pubsub.js"
import * as FaultProxy from "../../transport/test/support/FaultProxy.js"
import { type PrivatePubSub, start } from "./support/PrivatePubSub.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const projectId = "bulwark-driver"

let emulator: PrivatePubSub
beforeAll(async () => {
  emulator = await start()
}, 90_000)
afterAll(async () => {
  await emulator?.destroy()
})

let counter = 0
const topicName = (label: string) => `bulwark-test-${label}-${Date.now().toString(36)}-${(counter++).toString(36)}`

const message = (id: string, headers: Record<string, string> = {}, key = ""): Transport.OutgoingMessage => ({
  id,
  key,
  payload: encoder.encode(JSON.stringify({ id })),
  headers
})

const transport = (options: PubSubTransport.Options = {}) =>
  PubSubTransport.make({ apiEndpoint: emulator.endpoint, projectId, visibilityTimeout: "2 seconds", ...options })

const takeN = (stream: Stream.Stream<Delivery.Delivery, Transport.SubscribeError>, n: number) =>
  Stream.take(stream, n).pipe(Stream.runCollect, Effect.map(Chunk.toReadonlyArray), Effect.timeout("30 seconds"))

const reason = (text: string) =>
  new Delivery.DeadLetterReason({
    category: "schema",
    attempts: 1,
    error: new Failure.FailureRecord({ tag: "BadInput", message: text, classification: "permanent", category: "schema" })
  })

describe("starting", () => {
  it.live("an endpoint nobody listens on is a typed error within the connect timeout, not a hang", () =>
    Effect.gen(function*() {
      const port = yield* Contract.closedPort
      const error = yield* PubSubTransport.make({ apiEndpoint: `127.0.0.1:${port}`, connectTimeout: "2 seconds" }).pipe(
        Effect.scoped,
        Effect.flip,
        Effect.timeout("15 seconds")
      )
      expect(error._tag).toBe("PubSubConnectionError")
      expect(error.message).toContain(`127.0.0.1:${port}`)
    }), 20_000)

  it.live("a password in the endpoint or a service account's private key never shows in errors or logs", () =>
    Effect.gen(function*() {
      const port = yield* Contract.closedPort
      const password = Contract.testPassword()
      const texts = yield* Contract.visibleTexts(
        PubSubTransport.make({
          apiEndpoint: `user:${password}@127.0.0.1:${port}`,
          clientConfig: { credentials: { client_email: "bulwark@example.iam.gserviceaccount.com", private_key: password } },
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
      const error = yield* PubSubTransport.make({ apiEndpoint: `127.0.0.1:${port}`, connectTimeout: "1 second" }).pipe(
        Effect.scoped,
        Effect.flip,
        Effect.timeout("15 seconds")
      )
      expect(error._tag).toBe("PubSubConnectionError")
      expect(Date.now() - started).toBeLessThan(10_000)
    }), 20_000)

  it.scopedLive("declares the visibility timeout in whole seconds, and no persistence on the emulator", () =>
    Effect.gen(function*() {
      const driver = yield* transport({ visibilityTimeout: "1500 millis" })
      expect(Duration.toMillis(driver.features.visibilityTimeout)).toBe(2_000)
      expect(driver.features.persistent).toBe(false)
      expect(driver.features.orderedPerKey).toBe(false)
    }))
})

describe("names", () => {
  it.scopedLive("a topic name Pub/Sub refuses is a PublishError / SubscribeError caused by InvalidName", () =>
    Effect.gen(function*() {
      const driver = yield* transport()
      const published = yield* Effect.flip(driver.publish("9-starts-with-a-digit", [message("n-1")]))
      expect(published._tag).toBe("PublishError")
      expect(published.cause).toBeInstanceOf(PubSubTransport.InvalidName)
      expect(Failure.isClassified(published.cause) && published.cause[Failure.ClassifiedTypeId].classification).toBe("permanent")
      const subscribed = yield* Effect.flip(Stream.runHead(driver.subscribe("goog-reserved")))
      expect(subscribed._tag).toBe("SubscribeError")
      expect(subscribed.cause).toBeInstanceOf(PubSubTransport.InvalidName)
      const group = yield* Effect.flip(Stream.runHead(driver.subscribe(topicName("group"), { group: "bad/group" })))
      expect((group.cause as PubSubTransport.InvalidName).kind).toBe("subscription")
    }))
})

describe("encoding", () => {
  it("headers go as attributes beside the transport's own; headers of its names are not carried; decode reads them back", () => {
    const headers = JSON.parse(`{"__proto__": "p", "trace": "t-1", "bulwark-id": "forged", "bulwark-framed": "1"}`) as Record<string, string>
    const encoded = internal.encode(message("m-1", headers, "k-1"))
    expect(encoded.attributes).toEqual({ ...JSON.parse(`{"__proto__": "p"}`), trace: "t-1", "bulwark-id": "m-1", "bulwark-key": "k-1" })
    expect(Object.getPrototypeOf(encoded.attributes)).toBe(Object.prototype)
    const decoded = internal.decode("orders", { ackId: "a", message: { messageId: "s-1", data: encoded.data, attributes: encoded.attributes } })
    expect(decoded.id).toBe("m-1")
    expect(decoded.key).toBe("k-1")
    expect(Object.getOwnPropertyNames(decoded.headers).sort()).toEqual(["__proto__", "trace"])
    expect(decoder.decode(decoded.payload)).toBe(JSON.stringify({ id: "m-1" }))
    // No key: no key attribute (a header of that name is not carried either).
    expect(internal.encode(message("m-2", { "bulwark-key": "forged" })).attributes).toEqual({ "bulwark-id": "m-2" })
  })

  it("headers Pub/Sub would refuse as attributes (goog prefix, empty name, multi-byte value over 1 KB) are framed, whole", () => {
    for (const headers of [{ "Goog-thing": "1" }, { "": "1" }, { wide: "é".repeat(600) }]) {
      const encoded = internal.encode(message("m-3", headers, "k"))
      expect(encoded.attributes).toEqual({ "bulwark-framed": "1" })
      const decoded = internal.decode("orders", { ackId: "a", message: { messageId: "s", data: encoded.data, attributes: encoded.attributes } })
      expect(decoded).toMatchObject({ id: "m-3", key: "k", headers })
    }
    // 512 two-byte characters are 1024 bytes: still an attribute.
    expect(internal.encode(message("m-4", { wide: "é".repeat(512) })).attributes["wide"]).toBe("é".repeat(512))
  })

  it("a publish is split into requests within Pub/Sub's limits, in order", () => {
    const small = Array.from({ length: 2_500 }, (_, i) => internal.encode(message(`m-${i}`)))
    expect(internal.batches(small).map((batch) => batch.length)).toEqual([1_000, 1_000, 500])
    const big = Array.from({ length: 12 }, (_, i) => ({ data: Buffer.alloc(1024 * 1024), attributes: { "bulwark-id": `b-${i}` } }))
    const requests = internal.batches(big)
    expect(requests.map((batch) => batch.length)).toEqual([8, 4])
    expect(requests.flat()).toEqual(big)
    expect(internal.batches(small.slice(0, 3))).toEqual([small.slice(0, 3)])
  })
})

describe("messages", () => {
  it.scopedLive("headers beyond Pub/Sub's attribute limits travel whole, and so does a long dead-letter reason", () =>
    Effect.gen(function*() {
      const driver = yield* transport()
      const topic = topicName("big-headers")
      const headers: Record<string, string> = { long: "x".repeat(5_000), "correlation-id": "c-1" }
      for (let i = 0; i < 150; i++) headers[`h-${i}`] = `v-${i}`
      yield* driver.publish(topic, [message("big-1", headers, "key-1")])
      const [got] = yield* takeN(driver.subscribe(topic), 1)
      expect(got!.message.id).toBe("big-1")
      expect(got!.message.key).toBe("key-1")
      expect(got!.message.headers).toEqual(headers)
      expect(decoder.decode(got!.message.payload)).toBe(JSON.stringify({ id: "big-1" }))
      const longReason = "the payload failed validation: ".repeat(100)
      yield* got!.deadLetter(reason(longReason))
      const [dead] = yield* takeN(driver.subscribe(Delivery.deadLetterTopic(topic)), 1)
      expect(Delivery.readDeadLetterReason(dead!.message.headers)?.error.message).toBe(longReason)
      expect(dead!.message.headers["long"]).toBe(headers["long"])
      yield* dead!.ack
    }))

  it.scopedLive("a message published by another client is delivered with its attributes as headers", () =>
    Effect.gen(function*() {
      const driver = yield* transport()
      const topic = topicName("foreign")
      // Creates the topic and its default subscription.
      yield* driver.publish(topic, [message("own-1")])
      const pubsub = new PubSub({ projectId, apiEndpoint: emulator.endpoint })
      const client = new v1.PublisherClient(pubsub.options as ConstructorParameters<typeof v1.PublisherClient>[0])
      yield* Effect.addFinalizer(() => Effect.promise(() => client.close()))
      const [response] = yield* Effect.promise(() =>
        client.publish({ topic: `projects/${projectId}/topics/${topic}`, messages: [{ data: Buffer.from("raw"), attributes: { origin: "elsewhere" } }] })
      )
      const got = yield* takeN(driver.subscribe(topic), 2)
      const foreign = got.find((d) => d.message.id !== "own-1")!
      expect(foreign.message.id).toBe(response.messageIds![0])
      expect(foreign.message.headers).toEqual({ origin: "elsewhere" })
      expect(foreign.message.key).toBe("")
      expect(decoder.decode(foreign.message.payload)).toBe("raw")
      yield* Effect.forEach(got, (d) => d.ack)
    }))

  it.prop(
    "encoding round-trips id, key, headers and payload, within attributes or framed",
    {
      id: fc.string({ minLength: 1, maxLength: 40 }),
      key: fc.string({ maxLength: 40 }),
      headers: fc.dictionary(
        fc.string({ minLength: 1, maxLength: 300 }).filter((name) => !Object.values(internal.Attributes).includes(name as never)),
        fc.string({ maxLength: 1_500 }),
        { maxKeys: 8 }
      ),
      payload: fc.uint8Array({ maxLength: 200 })
    },
    ({ headers, id, key, payload }) => {
      const encoded = internal.encode({ id, key, headers, payload })
      const decoded = internal.decode("topic", { ackId: "a", message: { messageId: "m", data: encoded.data, attributes: encoded.attributes } })
      expect(decoded.id).toBe(id)
      expect(decoded.key).toBe(key)
      expect(decoded.headers).toEqual(headers)
      expect([...decoded.payload]).toEqual([...payload])
    }
  )
})

describe("the service's own dead-lettering", () => {
  it.scopedLive("a message nacked maxDeliveryAttempts times is forwarded by Pub/Sub to the .dlq topic, attempts counted", () =>
    Effect.gen(function*() {
      const driver = yield* transport({ maxDeliveryAttempts: 5 })
      const topic = topicName("redrive")
      yield* driver.publish(topic, [message("r-1", { "correlation-id": "corr-r" })])
      const stream = driver.subscribe(topic)
      const attempts: Array<number> = []
      for (let i = 0; i < 5; i++) {
        const [d] = yield* takeN(stream, 1)
        attempts.push(d!.attempt)
        yield* d!.nack()
      }
      expect(attempts).toEqual([1, 2, 3, 4, 5])
      // The emulator forwards while the source subscription is being pulled (the service does it on its own);
      // a live consumer of the source is the usual case anyway. It must not see the message a sixth time.
      const source = yield* Effect.fork(takeN(stream, 1))
      const [dead] = yield* takeN(driver.subscribe(Delivery.deadLetterTopic(topic)), 1)
      expect(dead!.message.id).toBe("r-1")
      expect(dead!.message.headers["correlation-id"]).toBe("corr-r")
      expect(dead!.message.headers["CloudPubSubDeadLetterSourceDeliveryCount"]).toBe("5")
      yield* dead!.ack
      yield* Effect.sleep("2500 millis")
      expect(source.unsafePoll()).toBeNull()
    }), 60_000)
})

describe("acks", () => {
  it.scopedLive("with confirmAcks an ack completes once Pub/Sub answered, and the message does not come back", () =>
    Effect.gen(function*() {
      const driver = yield* transport({ confirmAcks: true })
      const topic = topicName("confirmed")
      yield* driver.publish(topic, [message("c-1"), message("c-2")])
      const stream = driver.subscribe(topic)
      const got = yield* takeN(stream, 2)
      yield* Effect.forEach(got, (d) => d.ack, { concurrency: "unbounded" })
      const again = yield* Stream.runHead(stream).pipe(Effect.timeout("3 seconds"), Effect.option)
      expect(again._tag).toBe("None")
    }))
})

describe("a subscription deleted under a running consumer", () => {
  it.scopedLive("is created again, and receives what is published after", () =>
    Effect.gen(function*() {
      const driver = yield* transport()
      const topic = topicName("deleted")
      yield* driver.publish(topic, [message("before")])
      const stream = driver.subscribe(topic)
      const [first] = yield* takeN(stream, 1)
      yield* first!.ack
      const consumer = yield* Effect.fork(takeN(stream, 1))
      const pubsub = new PubSub({ projectId, apiEndpoint: emulator.endpoint })
      const client = new v1.SubscriberClient(pubsub.options as ConstructorParameters<typeof v1.SubscriberClient>[0])
      yield* Effect.addFinalizer(() => Effect.promise(() => client.close()))
      yield* Effect.promise(() =>
        client.deleteSubscription({ subscription: `projects/${projectId}/subscriptions/${PubSubTransport.subscriptionId(topic, "default")}` })
      )
      // The consumer's next pull finds it missing and creates it again; what is published after reaches it.
      yield* Effect.sleep("3 seconds")
      yield* driver.publish(topic, [message("after")])
      const [again] = yield* Fiber.join(consumer)
      expect(again!.message.id).toBe("after")
      yield* again!.ack
    }), 30_000)
})

describe("a service that stops answering", () => {
  it.scopedLive("a publish fails with a transient PublishError within publishTimeout, and publishes again once the service answers", () =>
    FaultProxy.expectStalledPublishFails({
      port: emulator.port,
      make: (port) => PubSubTransport.make({ apiEndpoint: `127.0.0.1:${port}`, projectId, visibilityTimeout: "2 seconds", publishTimeout: "2 seconds" }),
      topic: topicName("stall"),
      message: (id) => message(id),
      within: "10 seconds"
    }), 40_000)
})
