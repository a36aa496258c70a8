import { GetRecordsCommand, GetShardIteratorCommand, KinesisClient, ListShardsCommand, PutRecordsCommand, SplitShardCommand } from "@aws-sdk/client-kinesis"
import { Database } from "@bulwark/sql"
import { Delivery } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import * as Contract from "@bulwark/transport/Contract"
import { afterAll, beforeAll, describe, expect, it, layer } from "@effect/vitest"
import { NodeHttpHandler } from "@smithy/node-http-handler"
import { Chunk, Duration, Effect, Stream } from "effect"
import { CheckpointStore, KinesisTransport } from "../src/index.js"
import * as SqlStore from "../src/CheckpointStore/Sql.js"
import { decode, encode } from "../src/internal/codec.js"
import * as FaultProxy from "../../transport/test/support/FaultProxy.js"
import * as HandlerCache from "../../transport/test/support/HandlerCache.js"
import { credentials, type PrivateKinesis, start } from "./support/PrivateKinesis.js"

const encoder = new TextEncoder()

let emulator: PrivateKinesis
let client: KinesisClient
beforeAll(async () => {
  emulator = await start()
  client = new KinesisClient({ endpoint: emulator.endpoint, region: "us-east-1", credentials, requestHandler: new NodeHttpHandler() })
}, 60_000)
afterAll(async () => {
  client?.destroy()
  await emulator?.destroy()
})

let counter = 0
const topicName = (label: string) => `test.${label}-${Date.now().toString(36)}-${(counter++).toString(36)}`

const message = (id: string, key = "", headers: Record<string, string> = {}): Transport.OutgoingMessage => ({
  id,
  key,
  payload: encoder.encode(JSON.stringify({ id })),
  headers
})

const options = (more: KinesisTransport.Options = {}): KinesisTransport.Options => ({
  endpoint: emulator.endpoint,
  clientConfig: { credentials },
  visibilityTimeout: "2 seconds",
  pollInterval: "50 millis",
  ...more
})

const takeN = (stream: Stream.Stream<Delivery.Delivery, Transport.SubscribeError>, n: number) =>
  Stream.take(stream, n).pipe(Stream.runCollect, Effect.map(Chunk.toReadonlyArray), Effect.timeout("30 seconds"))

const nothingWithin = (stream: Stream.Stream<Delivery.Delivery, Transport.SubscribeError>, period: Duration.DurationInput) =>
  Stream.runHead(stream).pipe(Effect.timeout(period), Effect.option, Effect.map((o) => o._tag === "None"))


describe("starting", () => {
  it.live("an endpoint nobody listens on is a typed error within the connect timeout, not a hang", () =>
    Effect.gen(function*() {
      const port = yield* Contract.closedPort
      const error = yield* KinesisTransport.make({
        endpoint: `http://127.0.0.1:${port}`,
        clientConfig: { credentials, maxAttempts: 1 },
        connectTimeout: "2 seconds"
      }).pipe(Effect.scoped, Effect.provide(CheckpointStore.layerMemory()), Effect.flip, Effect.timeout("15 seconds"))
      expect(error._tag).toBe("KinesisConnectionError")
      expect(error.message).toContain(`127.0.0.1:${port}`)
    }), 20_000)

  it.live("a password in the endpoint never shows in errors or logs", () =>
    Effect.gen(function*() {
      const port = yield* Contract.closedPort
      const password = Contract.testPassword()
      const texts = yield* Contract.visibleTexts(
        KinesisTransport.make({
          endpoint: `http://user:${password}@127.0.0.1:${port}`,
          clientConfig: { credentials, maxAttempts: 1 },
          connectTimeout: "2 seconds"
        }).pipe(Effect.scoped, Effect.provide(CheckpointStore.layerMemory()))
      )
      Contract.expectNoPassword(texts, password)
    }), 40_000)
})

describe("records", () => {
  it("a message survives the framing whole; a record another producer wrote is its blob, partition key and sequence number", () => {
    const framed = encode(message("m-1", "k-1", { ["__proto__"]: "p", "x-h": "v" }))
    expect(framed.PartitionKey).toBe("k-1")
    const back = decode("t", { Data: framed.Data!, PartitionKey: "k-1", SequenceNumber: "1" })
    expect(back.id).toBe("m-1")
    expect(back.key).toBe("k-1")
    expect(Object.getOwnPropertyNames(back.headers).sort()).toEqual(["__proto__", "x-h"])
    expect(JSON.parse(new TextDecoder().decode(back.payload))).toEqual({ id: "m-1" })
    // A keyless message is spread by its id; a long key is hashed to Kinesis's 256 characters.
    const keyless = encode(message("m-2"))
    expect(keyless.PartitionKey).toBe("m-2")
    expect(decode("t", { Data: keyless.Data!, PartitionKey: "m-2", SequenceNumber: "2" }).key).toBe("")
    const long = encode(message("m-3", "k".repeat(300)))
    expect(long.PartitionKey).toHaveLength(64)
    expect(decode("t", { Data: long.Data!, PartitionKey: long.PartitionKey!, SequenceNumber: "3" }).key).toBe("k".repeat(300))
    const foreign = decode("t", { Data: encoder.encode("plain"), PartitionKey: "pk", SequenceNumber: "42" })
    expect(foreign).toMatchObject({ id: "42", key: "pk", headers: {} })
    expect(new TextDecoder().decode(foreign.payload)).toBe("plain")
  })

  it.scopedLive("records another producer put on the stream are delivered", () =>
    Effect.gen(function*() {
      const transport = yield* KinesisTransport.make(options())
      const topic = topicName("foreign")
      // The transport creates the stream; another producer writes to it.
      yield* transport.publish(topic, [message("ours", "k")])
      yield* Effect.promise(() =>
        client.send(new PutRecordsCommand({
          StreamName: KinesisTransport.streamName("bulwark-", topic),
          Records: [{ Data: encoder.encode("theirs"), PartitionKey: "their-key" }]
        }))
      )
      const got = yield* takeN(transport.subscribe(topic), 2)
      yield* Effect.forEach(got, (d) => d.ack)
      const theirs = got.find((d) => d.message.id !== "ours")!
      expect(got.map((d) => d.message.id)).toContain("ours")
      expect(new TextDecoder().decode(theirs.message.payload)).toBe("theirs")
      expect(theirs.message.key).toBe("their-key")
    }).pipe(Effect.provide(CheckpointStore.layerMemory())), 30_000)
})

describe("the client", () => {
  it.scopedLive("reads and publishes resolve the client's middleware once per command, not per call", () =>
    Effect.gen(function*() {
      const transport = yield* KinesisTransport.make(options())
      const topic = topicName("cached")
      // The stream is created and its shards found (calls with an abort signal) before the watch starts counting.
      yield* transport.publish(topic, [message("warm", "w")])
      const stream = transport.subscribe(topic)
      yield* Effect.forEach(yield* takeN(stream, 1), (d) => d.ack)
      const calls = yield* HandlerCache.watch(KinesisClient, [PutRecordsCommand, GetRecordsCommand])
      for (let round = 0; round < 3; round++) yield* transport.publish(topic, [message(`m-${round}`, "k")])
      const got = yield* takeN(stream, 3)
      yield* Effect.forEach(got, (d) => d.ack)
      // Reads go on every poll interval: a few more, so that several are counted.
      yield* Effect.sleep("300 millis")
      calls.expectResolvedOnce()
    }).pipe(Effect.provide(CheckpointStore.layerMemory())), 30_000)
})

// One PGlite database for these tests: the checkpoint table outlives the transports, as it outlives processes.
layer(Database.layerPglite(), { timeout: "60 seconds", excludeTestServices: true })("checkpoints in the SQL store", (it) => {
  it.effect("a group's next process resumes after what the last one settled; what it fetched and left comes back as a further attempt", () =>
    Effect.gen(function*() {
      const topic = topicName("resume")
      const sent = Array.from({ length: 5 }, (_, i) => message(`r-${i}`, "same-key"))
      // First process: takes the first three (one key: they come one at a time) and acks them, then ends.
      yield* Effect.scoped(Effect.gen(function*() {
        const transport = yield* KinesisTransport.make(options())
        yield* transport.publish(topic, sent)
        const stream = transport.subscribe(topic, { group: "g" })
        for (let i = 0; i < 3; i++) {
          const [d] = yield* takeN(stream, 1)
          expect(d!.message.id).toBe(`r-${i}`)
          yield* d!.ack
        }
      }))
      // Second process, same store: the last two only.
      yield* Effect.scoped(Effect.gen(function*() {
        const transport = yield* KinesisTransport.make(options())
        const stream = transport.subscribe(topic, { group: "g" })
        const [fourth] = yield* takeN(stream, 1)
        expect(fourth!.message.id).toBe("r-3")
        expect(fourth!.attempt).toBe(2)
        yield* fourth!.ack
        const [fifth] = yield* takeN(stream, 1)
        expect(fifth!.message.id).toBe("r-4")
        yield* fifth!.ack
        expect(yield* nothingWithin(stream, "1 second")).toBe(true)
        // Another group starts at the trim horizon.
        const other = yield* takeN(transport.subscribe(topic, { group: "other" }), 1)
        expect(other[0]!.message.id).toBe("r-0")
      }))
    }).pipe(Effect.provide(SqlStore.layer({ table: "kinesis_resume_test" }))), 60_000)

  it.effect("a shard whose holder stopped renewing is taken over after the lease expires, and its records count a further attempt", () =>
    Effect.gen(function*() {
      const store = yield* CheckpointStore.CheckpointStore
      const topic = topicName("takeover")
      const stream = KinesisTransport.streamName("bulwark-", topic)
      yield* Effect.scoped(Effect.gen(function*() {
        const transport = yield* KinesisTransport.make(options({ leaseDuration: "600 millis" }))
        yield* transport.publish(topic, [message("t-1", "k")])
        // A process that died holding the shard: its lease runs 1.5 s, and it had fetched everything.
        const shard = "shardId-000000000000"
        const key = { stream, group: "default", shard }
        const lease = yield* store.claim(key, "dead-process", Duration.millis(1500))
        expect(lease).toBeDefined()
        expect(yield* store.delivered(key, "dead-process", "9".repeat(60))).toBe(true)
        const started = Date.now()
        const [d] = yield* takeN(transport.subscribe(topic), 1)
        expect(Date.now() - started).toBeGreaterThanOrEqual(1200)
        expect(d!.message.id).toBe("t-1")
        expect(d!.attempt).toBe(2)
        yield* d!.ack
        // Fenced: the dead process can no longer move the checkpoint.
        expect(yield* store.checkpoint(key, "dead-process", { sequence: "1", caughtUp: true, ended: false })).toBe(false)
      }))
    }).pipe(Effect.provide(SqlStore.layer({ table: "kinesis_takeover_test" }))), 60_000)

  it.effect("one owner at a time: a held lease is refused, a released one keeps its checkpoint", () =>
    Effect.gen(function*() {
      const store = yield* CheckpointStore.CheckpointStore
      const key = { stream: "s", group: "g", shard: "shardId-1" }
      expect(yield* store.claim(key, "a", Duration.seconds(30))).toEqual({ checkpoint: undefined, delivered: undefined, retries: 0, ended: false })
      expect(yield* store.claim(key, "b", Duration.seconds(30))).toBeUndefined()
      expect(yield* store.checkpoint(key, "b", { sequence: "5", caughtUp: false, ended: false })).toBe(false)
      expect(yield* store.delivered(key, "a", "9")).toBe(true)
      expect(yield* store.checkpoint(key, "a", { sequence: "7", caughtUp: false, ended: false })).toBe(true)
      expect(yield* store.renew(key, "a", Duration.seconds(30))).toBe(true)
      yield* store.release(key, "a")
      expect(yield* store.renew(key, "a", Duration.seconds(30))).toBe(false)
      // Taken over with records fetched past the checkpoint: one more retry counted.
      expect(yield* store.claim(key, "b", Duration.seconds(30))).toEqual({ checkpoint: "7", delivered: "9", retries: 1, ended: false })
      expect(yield* store.checkpoint(key, "b", { sequence: "9", caughtUp: true, ended: true })).toBe(true)
      expect(yield* store.ended(key)).toBe(true)
    }).pipe(Effect.provide(SqlStore.layer({ table: "kinesis_lease_test" }))), 30_000)

  it.effect("a group's readers: announced ones count until their time runs out or they leave", () =>
    Effect.gen(function*() {
      for (const store of [yield* SqlStore.make({ table: "kinesis_members_test" }), yield* CheckpointStore.makeMemory]) {
        const group = { stream: `s-${Date.now().toString(36)}`, group: "g" }
        expect(yield* store.announce(group, "a", Duration.seconds(30))).toBe(1)
        expect(yield* store.announce(group, "b", Duration.seconds(30))).toBe(2)
        expect(yield* store.announce({ ...group, group: "other" }, "a", Duration.seconds(30))).toBe(1)
        yield* store.leave(group, "a")
        expect(yield* store.announce(group, "b", Duration.seconds(30))).toBe(1)
        expect(yield* store.announce(group, "c", Duration.millis(400))).toBe(2)
        yield* Effect.sleep("600 millis")
        expect(yield* store.announce(group, "b", Duration.seconds(30))).toBe(1)
      }
    }), 30_000)
})

describe("sharing a group's shards", () => {
  it.scopedLive("a process joining a group takes over its share of the shards; nothing is lost in the handover", () =>
    Effect.gen(function*() {
      // One store, two processes (each transport has an owner of its own), four shards.
      const store = yield* CheckpointStore.makeMemory
      const make = KinesisTransport.make(options({ shardCount: 4, leaseDuration: "1500 millis" })).pipe(
        Effect.provideService(CheckpointStore.CheckpointStore, store)
      )
      const first = yield* make
      const second = yield* make
      const topic = topicName("share")
      const received = { first: new Map<string, number>(), second: new Map<string, number>() }
      const consume = (transport: typeof first, into: Map<string, number>) =>
        transport.subscribe(topic, { group: "g" }).pipe(
          Stream.runForEach((d) => Effect.zipRight(Effect.sync(() => into.set(d.message.id, (into.get(d.message.id) ?? 0) + 1)), d.ack)),
          Effect.forkScoped
        )
      const batch = (label: string) => Array.from({ length: 80 }, (_, i) => message(`${label}-${i}`, `key-${i}`))
      yield* first.publish(topic, batch("before"))
      yield* consume(first, received.first)
      // Alone in the group, the first process holds every shard and reads everything.
      while (received.first.size < 80) yield* Effect.sleep("50 millis")
      yield* consume(second, received.second)
      // Within a few lease ticks the first gives up two shards and the second claims them.
      yield* Effect.sleep("4 seconds")
      yield* first.publish(topic, batch("after"))
      const all = () => new Set([...received.first.keys(), ...received.second.keys()])
      for (let i = 0; i < 400 && all().size < 160; i++) yield* Effect.sleep("50 millis")
      expect(all().size).toBe(160)
      const after = (into: Map<string, number>) => [...into.keys()].filter((id) => id.startsWith("after-")).length
      // Keys spread over all four shards: each process read the records of its two.
      expect(after(received.first)).toBeGreaterThan(0)
      expect(after(received.second)).toBeGreaterThan(0)
      expect(after(received.first) + after(received.second)).toBeGreaterThanOrEqual(80)
    }), 60_000)
})

describe("resharding", () => {
  it.live("a key's records after a split wait until the closed parent's records are settled", () =>
    Effect.gen(function*() {
      const transport = yield* KinesisTransport.make(options({ leaseDuration: "600 millis" }))
      const topic = topicName("split")
      const stream = KinesisTransport.streamName("bulwark-", topic)
      yield* transport.publish(topic, [message("before", "A")])
      const [parent] = (yield* Effect.promise(() => client.send(new ListShardsCommand({ StreamName: stream })))).Shards!
      yield* Effect.promise(() =>
        client.send(new SplitShardCommand({ StreamName: stream, ShardToSplit: parent!.ShardId!, NewStartingHashKey: (2n ** 127n).toString() }))
      )
      // kinesalite answers a split with UPDATING, then ACTIVE.
      yield* Effect.sleep("200 millis")
      yield* transport.publish(topic, [message("after", "A")])
      const subscription = transport.subscribe(topic)
      const [first] = yield* takeN(subscription, 1)
      expect(first!.message.id).toBe("before")
      // Unsettled: the child's record must not come.
      expect(yield* nothingWithin(subscription, "1500 millis")).toBe(true)
      yield* first!.ack
      const [second] = yield* takeN(subscription, 1)
      expect(second!.message.id).toBe("after")
      yield* second!.ack
    }).pipe(Effect.scoped, Effect.provide(CheckpointStore.layerMemory())), 60_000)
})

// Keep the raw client's read path honest: what the transport published is on the stream as framed records.
describe("on the stream", () => {
  it.scopedLive("one record per message, partitioned by key", () =>
    Effect.gen(function*() {
      const transport = yield* KinesisTransport.make(options())
      const topic = topicName("raw")
      yield* transport.publish(topic, [message("w-1", "key-1"), message("w-2", "key-1")])
      const stream = KinesisTransport.streamName("bulwark-", topic)
      const { ShardIterator } = yield* Effect.promise(() =>
        client.send(new GetShardIteratorCommand({ StreamName: stream, ShardId: "shardId-000000000000", ShardIteratorType: "TRIM_HORIZON" }))
      )
      const { Records } = yield* Effect.promise(() => client.send(new GetRecordsCommand({ ShardIterator })))
      expect(Records!.map((r) => r.PartitionKey)).toEqual(["key-1", "key-1"])
      expect(Records!.map((r) => decode(topic, r).id)).toEqual(["w-1", "w-2"])
    }).pipe(Effect.provide(CheckpointStore.layerMemory())), 30_000)
})

describe("a service that stops answering", () => {
  it.scopedLive("a publish fails with a transient PublishError after socketTimeout and the retries, and publishes again once the service answers", () =>
    FaultProxy.expectStalledPublishFails({
      port: emulator.port,
      make: (port) =>
        KinesisTransport.make({
          ...options(),
          endpoint: `http://127.0.0.1:${port}`,
          clientConfig: { credentials, maxAttempts: 1 },
          socketTimeout: "1 second",
          reconnectTimeout: "3 seconds"
        }),
      topic: topicName("stall"),
      message: (id) => message(id, "k"),
      within: "20 seconds"
    }).pipe(Effect.provide(CheckpointStore.layerMemory())), 60_000)
})
