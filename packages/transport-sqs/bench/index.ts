/**
 * Publish + consume throughput over an SQS emulator (fauxqs, a private one): Bulwark's transport against
 * `@aws-sdk/client-sqs` making the same calls (SendMessageBatch of 10, ReceiveMessage of 10, one
 * DeleteMessageBatch per receive), in one run, alternating, on standard and on FIFO queues.
 */
import { CreateQueueCommand, DeleteMessageBatchCommand, ReceiveMessageCommand, SendMessageBatchCommand, SQSClient } from "@aws-sdk/client-sqs"
import { Envelope } from "@bulwark/core"
import { Chunk, Effect, Schema, Stream } from "effect"
import { loadavg } from "node:os"
import { writeResults } from "../../../bench/lib.js"
import { SqsTransport } from "@bulwark/transport-sqs"
import { credentials, start } from "../test/support/PrivateSqs.js"

const messages = Number(process.env["BENCH_MESSAGES"] ?? 3_000)
const batch = 100
const rounds = 5

const emulator = await start()
const endpoint = emulator.endpoint

const Order = Schema.Struct({ n: Schema.Number, item: Schema.String })
const payloads = await Effect.runPromise(Effect.forEach(Array.from({ length: batch }, (_, n) => n), (n) =>
  Effect.flatMap(
    Envelope.make({ type: "order.placed", source: "bench", subject: `order-${n}`, data: { n, item: "widget" } }),
    (envelope) => Effect.map(Envelope.encode(Order)(envelope), (payload) => ({ id: envelope.id, key: envelope.subject, payload }))
  )))

let topicCount = 0
const nextTopic = () => `bench-${Date.now().toString(36)}-${topicCount++}`

/** The SDK client alone, the same calls the transport makes. */
const raw = async (fifo: boolean): Promise<number> => {
  const client = new SQSClient({ endpoint, region: "us-east-1", credentials })
  const name = `raw-${nextTopic()}${fifo ? ".fifo" : ""}`
  const { QueueUrl } = await client.send(
    new CreateQueueCommand({ QueueName: name, Attributes: { VisibilityTimeout: "30", ...(fifo ? { FifoQueue: "true" } : {}) } })
  )
  let sequence = 0
  const start = performance.now()
  const produce = (async () => {
    for (let sent = 0; sent < messages; sent += batch) {
      for (let i = 0; i < batch; i += 10) {
        await client.send(new SendMessageBatchCommand({
          QueueUrl,
          Entries: payloads.slice(i, i + 10).map((m, j) => ({
            Id: String(j),
            MessageBody: Buffer.from(m.payload).toString("base64"),
            MessageAttributes: { "bulwark-id": { DataType: "String", StringValue: m.id } },
            ...(fifo ? { MessageGroupId: m.key, MessageDeduplicationId: `${m.id}-${sequence++}` } : {})
          }))
        }))
      }
    }
  })()
  let received = 0
  while (received < messages) {
    const out = await client.send(new ReceiveMessageCommand({
      QueueUrl,
      MaxNumberOfMessages: 10,
      WaitTimeSeconds: 1,
      MessageAttributeNames: ["All"],
      MessageSystemAttributeNames: ["ApproximateReceiveCount"]
    }))
    const got = out.Messages ?? []
    if (got.length > 0) {
      await client.send(new DeleteMessageBatchCommand({ QueueUrl, Entries: got.map((m, j) => ({ Id: String(j), ReceiptHandle: m.ReceiptHandle! })) }))
    }
    received += got.length
  }
  await produce
  const seconds = (performance.now() - start) / 1000
  client.destroy()
  return messages / seconds
}

const viaTransport = (fifo: boolean) =>
  Effect.scoped(Effect.gen(function*() {
    const transport = yield* SqsTransport.make({ endpoint, clientConfig: { credentials }, fifo, visibilityTimeout: "30 seconds" })
    const topic = nextTopic()
    let sequence = 0
    // Fresh ids per publish: a FIFO queue would otherwise drop the repeats as duplicates.
    const outgoing = () => payloads.map((p) => ({ ...p, id: `${p.id}-${sequence++}`, headers: {} }))
    const start = performance.now()
    const produce = yield* Effect.fork(Effect.gen(function*() {
      for (let sent = 0; sent < messages; sent += batch) yield* transport.publish(topic, outgoing())
    }))
    // Default acks complete once queued, so one fiber acks the chunk in order.
    yield* transport.subscribe(topic).pipe(
      Stream.take(messages),
      Stream.mapChunksEffect((chunk) => Effect.as(Effect.forEach(chunk, (d) => d.ack, { discard: true }), Chunk.empty<void>())),
      Stream.runDrain
    )
    yield* produce.await
    return messages / ((performance.now() - start) / 1000)
  })).pipe(Effect.runPromise)

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const results = { raw: [] as Array<number>, transport: [] as Array<number>, rawFifo: [] as Array<number>, transportFifo: [] as Array<number> }
try {
  for (let i = 0; i < 2; i++) {
    await raw(false)
    await viaTransport(false)
  }
  const benchStart = performance.now()
  for (let round = 0; round < rounds && (round === 0 || performance.now() - benchStart < 60_000); round++) {
    results.raw.push(await raw(false))
    results.transport.push(await viaTransport(false))
    results.rawFifo.push(await raw(true))
    results.transportFifo.push(await viaTransport(true))
  }
} finally {
  await emulator.destroy()
}

const row = (name: string, ops: number, base: number, runs: Array<number>) => ({
  variant: name,
  "messages/s (median)": Math.round(ops),
  "vs raw client": `${Math.round((ops / base) * 100)}%`,
  runs: runs.map((r) => Math.round(r)).join(" / ")
})
const rawOps = median(results.raw)
const rawFifoOps = median(results.rawFifo)
writeResults("transport-sqs", "Amazon SQS transport (fauxqs emulator): publish + consume throughput", [
  row("raw @aws-sdk/client-sqs, standard queue", rawOps, rawOps, results.raw),
  row("Bulwark SqsTransport, fifo: false", median(results.transport), rawOps, results.transport),
  row("raw @aws-sdk/client-sqs, FIFO queue (group = key)", rawFifoOps, rawFifoOps, results.rawFifo),
  row("Bulwark SqsTransport, FIFO (default)", median(results.transportFifo), rawFifoOps, results.transportFifo)
], [
  `${messages} messages per run (${batch} per publish, CloudEvents JSON ~${payloads[0]!.payload.length} bytes), ${results.raw.length} alternating rounds after a warm-up; producer and consumer run at once.`,
  `Load average when the run ended (1, 5, 15 min, on 2 cores): ${loadavg().map((l) => l.toFixed(1)).join(", ")}.`,
  "Both send SendMessageBatch of 10 (the payload in base64), receive with ReceiveMessage of 10 (long poll 1 s) and delete once per receive; the transport's acks complete once queued and go out as one DeleteMessageBatch.",
  "Against fauxqs (in memory, Node) on the same machine, in a process of its own: its CPU use is in every figure, and the machine (2 cores) was shared with other work while this ran, so the figures are indicative, not precise. Real SQS is a network service with tens of milliseconds per call; the per-call overhead compared here matters less there."
])
process.exit(0)
