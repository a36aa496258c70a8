/**
 * One side of the SQS benchmark (bench/index.ts) in a long-lived process of its own: `BENCH_SIDE=raw` runs the
 * `@aws-sdk/client-sqs` client alone with its defaults, `BENCH_SIDE=raw-cached` the same with `cacheMiddleware`
 * (as the transport's client has it), `BENCH_SIDE=transport` Bulwark's transport. In one process the two share
 * the SDK's code, so each would shape the other's JIT state and garbage collection; a service runs only one.
 * Each request from the parent runs one round on a fresh queue and answers messages/s and this process's CPU
 * time per 1000 messages. Only the side's own library is loaded.
 */
/** What the parent sends once, before any round. */
export interface Setup {
  readonly _tag: "Setup"
  readonly endpoint: string
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string }
  readonly messages: number
  readonly payloads: ReadonlyArray<{ readonly id: string; readonly key: string; readonly payload: Uint8Array }>
}
/** Run one round on a fresh queue. */
export interface Round {
  readonly _tag: "Round"
  readonly fifo: boolean
}
/** A round's figures, or why it failed. */
export type Answer =
  | { readonly _tag: "Done"; readonly rate: number; readonly cpuPer1000: number }
  | { readonly _tag: "Failed"; readonly message: string }

const side = process.env["BENCH_SIDE"]
const batch = 100

const setup = await new Promise<Setup>((resolve) => process.once("message", (m) => resolve(m as Setup)))
const { credentials, endpoint, messages, payloads } = setup

let topicCount = 0
const nextTopic = () => `bench-${side}-${Date.now().toString(36)}-${topicCount++}`

/** The SDK client alone, the same calls the transport makes. */
const makeRaw = async () => {
  const { CreateQueueCommand, DeleteMessageBatchCommand, ReceiveMessageCommand, SendMessageBatchCommand, SQSClient } = await import(
    "@aws-sdk/client-sqs"
  )
  return async (fifo: boolean): Promise<number> => {
    const client = new SQSClient({ endpoint, region: "us-east-1", credentials, ...(side === "raw-cached" ? { cacheMiddleware: true } : {}) })
    const name = `raw-${nextTopic()}${fifo ? ".fifo" : ""}`
    const { QueueUrl } = await client.send(
      new CreateQueueCommand({ QueueName: name, Attributes: { VisibilityTimeout: "30", ...(fifo ? { FifoQueue: "true" } : {}) } })
    )
    let sequence = 0
    const entries = (from: number, to: number) =>
      payloads.slice(from, to).map((m, j) => ({
        Id: String(j),
        // The payload (JSON) as its text, as the transport sends a UTF-8 payload; the id and the key travel, as the
        // transport's do.
        MessageBody: Buffer.from(m.payload).toString("utf8"),
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
}

/** Bulwark's transport. */
const makeTransport = async () => {
  const { Chunk, Effect, Stream } = await import("effect")
  const { SqsTransport } = await import("@bulwark/transport-sqs")
  return (fifo: boolean): Promise<number> =>
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
}

const run = side === "raw" || side === "raw-cached" ? await makeRaw() : side === "transport" ? await makeTransport() : undefined
if (run === undefined) throw new Error(`BENCH_SIDE must be raw, raw-cached or transport, not ${side}`)

const answer = (a: Answer) => process.send!(a)
process.on("message", (m: Round) => {
  // CPU of this whole round (queue creation and the message before the clock included), as before the split.
  const before = process.cpuUsage()
  run(m.fifo).then(
    (rate) => {
      const used = process.cpuUsage(before)
      answer({ _tag: "Done", rate, cpuPer1000: (used.user + used.system) / messages })
    },
    (error: unknown) => answer({ _tag: "Failed", message: error instanceof Error ? error.stack ?? error.message : String(error) })
  )
})
// The parent closing the channel ends the process.
process.on("disconnect", () => process.exit(0))
process.send!({ _tag: "Ready" })
