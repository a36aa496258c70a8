/**
 * Publish + consume throughput over an SQS emulator (fauxqs, a private one): Bulwark's transport against
 * `@aws-sdk/client-sqs` making the same calls (SendMessageBatch of 10 carrying id and key, ReceiveMessage of 10,
 * one DeleteMessageBatch per receive, not awaited before the next receive, as the transport's default acks),
 * in one run, rounds interleaved, on standard and on FIFO queues. Run against the built packages (bench/run.ts).
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
const rounds = 7

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
  const entries = (from: number, to: number) =>
    payloads.slice(from, to).map((m, j) => ({
      Id: String(j),
      MessageBody: Buffer.from(m.payload).toString("base64"),
      // The id and the key travel, as the transport's do (it adds its encoding marker).
      MessageAttributes: { "bulwark-id": { DataType: "String", StringValue: m.id }, "bulwark-key": { DataType: "String", StringValue: m.key } },
      ...(fifo ? { MessageGroupId: m.key, MessageDeduplicationId: `${m.id}-${sequence++}` } : {})
    }))
  const receive = () =>
    client.send(new ReceiveMessageCommand({
      QueueUrl,
      MaxNumberOfMessages: 10,
      WaitTimeSeconds: 1,
      MessageAttributeNames: ["All"],
      MessageSystemAttributeNames: ["ApproximateReceiveCount"]
    }))
  // One message through before the clock starts, as on the transport's side (whose queues are created then).
  await client.send(new SendMessageBatchCommand({ QueueUrl, Entries: entries(0, 1) }))
  for (let warm = 0; warm < 1;) {
    const got = (await receive()).Messages ?? []
    if (got.length > 0) await client.send(new DeleteMessageBatchCommand({ QueueUrl, Entries: got.map((m, j) => ({ Id: String(j), ReceiptHandle: m.ReceiptHandle! })) }))
    warm += got.length
  }
  const start = performance.now()
  const produce = (async () => {
    for (let sent = 0; sent < messages; sent += batch) {
      for (let i = 0; i < batch; i += 10) {
        await client.send(new SendMessageBatchCommand({ QueueUrl, Entries: entries(i, i + 10) }))
      }
    }
  })()
  let received = 0
  // Deletes in flight while the next receive goes out, as the transport's acks (complete once queued) are.
  const deletes: Array<Promise<unknown>> = []
  while (received < messages) {
    const out = await receive()
    const got = out.Messages ?? []
    if (got.length > 0) {
      deletes.push(client.send(new DeleteMessageBatchCommand({ QueueUrl, Entries: got.map((m, j) => ({ Id: String(j), ReceiptHandle: m.ReceiptHandle! })) })))
    }
    received += got.length
  }
  await Promise.all(deletes)
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
    // One message through before the clock starts: the transport creates the topic's queues (and its dead-letter
    // queue) on first use, which the raw client did above with CreateQueue.
    yield* transport.publish(topic, outgoing().slice(0, 1))
    yield* transport.subscribe(topic).pipe(Stream.take(1), Stream.runForEach((d) => d.ack))
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
// CPU time (ms) of this process per 1000 messages: less sensitive to the machine's load than wall time.
const cpu = { raw: [] as Array<number>, transport: [] as Array<number>, rawFifo: [] as Array<number>, transportFifo: [] as Array<number> }
const measured = async (which: keyof typeof results, run: () => Promise<number>) => {
  const before = process.cpuUsage()
  results[which].push(await run())
  const used = process.cpuUsage(before)
  cpu[which].push((used.user + used.system) / messages)
}
const loads: Array<string> = []
try {
  for (let i = 0; i < 2; i++) {
    await raw(false)
    await viaTransport(false)
    await raw(true)
    await viaTransport(true)
  }
  const benchStart = performance.now()
  for (let round = 0; round < rounds && (round === 0 || performance.now() - benchStart < 120_000); round++) {
    // Raw and transport of a kind back to back, which of them first alternating by round.
    const pairs = [
      [() => measured("raw", () => raw(false)), () => measured("transport", () => viaTransport(false))],
      [() => measured("rawFifo", () => raw(true)), () => measured("transportFifo", () => viaTransport(true))]
    ]
    for (const [a, b] of pairs) {
      if (round % 2 === 0) {
        await a!()
        await b!()
      } else {
        await b!()
        await a!()
      }
    }
    loads.push(loadavg()[0]!.toFixed(1))
  }
} finally {
  await emulator.destroy()
}

const row = (name: string, which: keyof typeof results, base: keyof typeof results) => ({
  variant: name,
  "messages/s (median)": Math.round(median(results[which])),
  "vs raw client": `${Math.round((median(results[which]) / median(results[base])) * 100)}%`,
  "client CPU ms per 1000 messages (median)": median(cpu[which]).toFixed(0),
  runs: results[which].map((r) => Math.round(r)).join(" / ")
})
writeResults("transport-sqs", "Amazon SQS transport (fauxqs emulator): publish + consume throughput", [
  row("raw @aws-sdk/client-sqs, standard queue", "raw", "raw"),
  row("Bulwark SqsTransport, fifo: false (built dist)", "transport", "raw"),
  row("raw @aws-sdk/client-sqs, FIFO queue (group = key)", "rawFifo", "rawFifo"),
  row("Bulwark SqsTransport, FIFO (default; built dist)", "transportFifo", "rawFifo")
], [
  `${messages} messages per run (${batch} per publish, CloudEvents JSON ~${payloads[0]!.payload.length} bytes), ${results.raw.length} rounds after a warm-up of two of each, raw and transport back to back, which first alternating by round; producer and consumer run at once.`,
  `Load average (1 min, 2 cores) after each round: ${loads.join(", ")}; at the end (1, 5, 15 min): ${loadavg().map((l) => l.toFixed(1)).join(", ")}.`,
  "Bulwark runs from its built dist (`npm run build`), as users run it and as the AWS client runs: compiled JavaScript on both sides (earlier runs of this benchmark ran the transport from its TypeScript sources through tsx).",
  "Before the clock starts, each side sends, receives and deletes one message on its fresh queue (the transport creates its queue, its dead-letter queue and the redrive policy on first use; the raw client creates its queue with CreateQueue); until 2026-12-06 20:00 the transport's queue creation was inside the timed window.",
  "Both send SendMessageBatch of 10 (the payload in base64, id and key as message attributes; the transport adds its encoding marker), receive with ReceiveMessage of 10 (long poll 1 s, one receive in flight) and delete once per receive with DeleteMessageBatch, without waiting for the delete before the next receive (the transport's acks complete once queued). Before 2026-12-06 the raw client sent only the id and waited for each delete, so its figures are not comparable with this run's.",
  "Client CPU: CPU time of the benchmark's process per 1000 messages (the emulator runs in a process of its own and is not counted).",
  "Against fauxqs (in memory, Node) on the same machine, in a process of its own: its CPU use is in every figure, and the machine (2 cores) was shared with other work while this ran, so the figures are indicative, not precise. Real SQS is a network service with tens of milliseconds per call; the per-call overhead compared here matters less there."
])
process.exit(0)
