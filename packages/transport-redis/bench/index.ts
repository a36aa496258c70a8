/**
 * Publish + consume throughput over Redis Streams: Bulwark's transport against raw ioredis doing the same
 * work (batches of XADD in MULTI, XREADGROUP COUNT 64, one XACK per message), in one run, alternating.
 */
import { Envelope, Pipeline } from "@bulwark/core"
import { Chunk, Effect, Schema, Stream } from "effect"
import { Redis } from "ioredis"
import { writeResults } from "../../../bench/lib.js"
import { RedisTransport } from "../src/index.js"
import { deleteKeys } from "../test/helpers.js"

const url = process.env["BULWARK_REDIS_URL"] ?? "redis://127.0.0.1:6379"
const keyPrefix = `bulwark-bench:${Date.now().toString(36)}:`
const messages = Number(process.env["BENCH_MESSAGES"] ?? 20_000)
const batch = 100
const readCount = 64
const rounds = 3

const Order = Schema.Struct({ n: Schema.Number, item: Schema.String })
const payloads = await Effect.runPromise(Effect.forEach(Array.from({ length: batch }, (_, n) => n), (n) =>
  Effect.flatMap(
    Envelope.make({ type: "order.placed", source: "bench", subject: `order-${n}`, data: { n, item: "widget" } }),
    (envelope) => Effect.map(Envelope.encode(Order)(envelope), (payload) => ({ id: envelope.id, key: envelope.subject, payload }))
  )))

let topicCount = 0
const nextTopic = () => `t${topicCount++}`

const raw = async (ackPerBatch: boolean): Promise<number> => {
  const key = `${keyPrefix}${nextTopic()}`
  const producer = new Redis(url)
  const consumer = new Redis(url)
  await producer.xgroup("CREATE", key, "default", "0", "MKSTREAM")
  const start = performance.now()
  const produce = (async () => {
    for (let sent = 0; sent < messages; sent += batch) {
      const tx = producer.multi()
      for (const m of payloads) tx.xadd(key, "*", "id", m.id, "key", m.key, "payload", Buffer.from(m.payload))
      await tx.exec()
    }
  })()
  let received = 0
  while (received < messages) {
    const reply = (await consumer.callBuffer("XREADGROUP", ["GROUP", "default", "c", "COUNT", readCount, "BLOCK", 1000, "STREAMS", key, ">"])) as
      | Array<[Buffer, Array<[Buffer, Array<Buffer>]>]>
      | null
    const entries = reply?.[0]?.[1] ?? []
    if (ackPerBatch) {
      if (entries.length > 0) await producer.xack(key, "default", ...entries.map(([id]) => id))
    } else {
      await Promise.all(entries.map(([id]) => producer.xack(key, "default", id)))
    }
    received += entries.length
  }
  await produce
  const seconds = (performance.now() - start) / 1000
  producer.disconnect()
  consumer.disconnect()
  return messages / seconds
}

const outgoing = payloads.map((p) => ({ ...p, headers: {} }))

const viaTransport = (mode: "transport" | "confirmed" | "pipeline") =>
  Effect.scoped(Effect.gen(function*() {
    const transport = yield* RedisTransport.make({ url, keyPrefix, readCount, confirmAcks: mode === "confirmed" })
    const topic = nextTopic()
    const start = performance.now()
    const produce = yield* Effect.fork(Effect.gen(function*() {
      for (let sent = 0; sent < messages; sent += batch) yield* transport.publish(topic, outgoing)
    }))
    if (mode === "transport") {
      // Default acks complete once queued, so one fiber acks the chunk in order.
      yield* transport.subscribe(topic).pipe(
        Stream.take(messages),
        Stream.mapChunksEffect((chunk) => Effect.as(Effect.forEach(chunk, (d) => d.ack, { discard: true }), Chunk.empty<void>())),
        Stream.runDrain
      )
    } else if (mode === "confirmed") {
      // A confirmed ack waits for Redis' answer, so each runs in its own fiber, as a handler pool's would.
      yield* transport.subscribe(topic).pipe(
        Stream.take(messages),
        Stream.mapChunksEffect((chunk) =>
          Effect.as(Effect.forEach(chunk, (d) => d.ack, { concurrency: "unbounded", discard: true }), Chunk.empty<void>())),
        Stream.runDrain
      )
    } else {
      let handled = 0
      yield* Pipeline.run(
        transport.subscribe(topic).pipe(Stream.take(messages)),
        () => Effect.sync(() => void handled++),
        { schema: Order, concurrency: readCount }
      )
    }
    yield* produce.await
    return messages / ((performance.now() - start) / 1000)
  })).pipe(Effect.runPromise)

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const results = {
  raw: [] as Array<number>,
  rawBatchedAck: [] as Array<number>,
  transport: [] as Array<number>,
  confirmed: [] as Array<number>,
  pipeline: [] as Array<number>
}
await raw(false) // warm-up: connections, JIT
await viaTransport("transport")
// Bounded: no new round starts after 30 s, so a loaded machine cannot stretch the run past a minute.
const benchStart = performance.now()
for (let round = 0; round < rounds && (round === 0 || performance.now() - benchStart < 30_000); round++) {
  results.raw.push(await raw(false))
  results.rawBatchedAck.push(await raw(true))
  results.transport.push(await viaTransport("transport"))
  results.confirmed.push(await viaTransport("confirmed"))
  results.pipeline.push(await viaTransport("pipeline"))
}

const cleanup = new Redis(url)
await Effect.runPromise(deleteKeys(cleanup, keyPrefix))
cleanup.disconnect()

const rawOps = median(results.raw)
const row = (name: string, ops: number, runs: Array<number>) => ({
  variant: name,
  "messages/s (median)": Math.round(ops),
  "vs raw": `${Math.round((ops / rawOps) * 100)}%`,
  runs: runs.map((r) => Math.round(r)).join(" / ")
})
const batchedAckOps = median(results.rawBatchedAck)
writeResults("transport-redis", "Redis Streams transport: publish + consume throughput", [
  row("raw ioredis (XADD in MULTI, XREADGROUP, XACK per message)", rawOps, results.raw),
  row("raw ioredis, one XACK per read batch", batchedAckOps, results.rawBatchedAck),
  row("Bulwark RedisTransport (publish, subscribe, ack)", median(results.transport), results.transport),
  row("Bulwark RedisTransport, confirmAcks: true", median(results.confirmed), results.confirmed),
  row("Bulwark RedisTransport + Pipeline.run (decode, no-op handler, ack)", median(results.pipeline), results.pipeline)
], [
  `${messages} messages per run (${batch} per publish, CloudEvents JSON ~${payloads[0]!.payload.length} bytes), ${results.raw.length} alternating rounds after a warm-up; producer and consumer run at once.`,
  `Both publish with one XADD per message in a MULTI of ${batch} and read with XREADGROUP COUNT ${readCount}. The raw consumer sends one XACK per message and awaits them before its next read (the goal's baseline); the second raw row sends one XACK per read batch.`,
  "Bulwark's acks issued together go out as one XACK, so per message it does the Redis work of the second raw row: " +
  `against that row it reaches ${Math.round((median(results.transport) / batchedAckOps) * 100)}%.`,
  "By default a Bulwark ack completes once queued (as a JetStream or AMQP ack does), so the consumer acks a chunk in order from one fiber. With confirmAcks: true each ack waits for Redis' answer, so the consumer acks each delivery in its own fiber, as a handler pool does.",
  "The Pipeline row also decodes every envelope and runs a handler (concurrency 64); it is shown for scale, not compared like for like.",
  "Redis on the same machine, no persistence (appendonly no, no RDB saves)."
])
