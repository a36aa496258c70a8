/**
 * Publish + consume throughput over a Kinesis emulator (kinesalite, a private one): Bulwark's transport against
 * `@aws-sdk/client-kinesis` making the calls a plain consumer makes (PutRecords of 100, one GetRecords loop per
 * shard from the trim horizon, the last sequence read kept per shard), in one run, rounds interleaved. The raw
 * consumer keeps no lease and no per-message state; the transport keeps both, and its checkpoints in the
 * in-memory store. Run against the built packages (see bench/run.ts).
 */
import {
  CreateStreamCommand,
  DescribeStreamSummaryCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  KinesisClient,
  ListShardsCommand,
  PutRecordsCommand
} from "@aws-sdk/client-kinesis"
import { Envelope } from "@bulwark/core"
import { NodeHttpHandler } from "@smithy/node-http-handler"
import { Chunk, Effect, Schema, Stream } from "effect"
import { readFileSync } from "node:fs"
import { loadavg } from "node:os"
import { writeResults } from "../../../bench/lib.js"
import { CheckpointStore, KinesisTransport } from "@bulwark/transport-kinesis"
import { credentials, start } from "../test/support/PrivateKinesis.js"

const messages = Number(process.env["BENCH_MESSAGES"] ?? 5_000)
const batch = 100
const rounds = 9
const shards = 2
const pollMillis = 50

const emulator = await start()
const endpoint = emulator.endpoint

// CPU time (ms) of this process and of the emulator's: less sensitive to the machine's load than wall time.
const ticks = Number(process.env["CLK_TCK"] ?? 100)
const emulatorCpu = () => {
  const fields = readFileSync(`/proc/${emulator.pid()}/stat`, "utf8").split(") ")[1]!.split(" ")
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticks
}
const ownCpu = () => {
  const usage = process.cpuUsage()
  return (usage.user + usage.system) / 1000
}
const cpu = {
  raw: { own: [] as Array<number>, emulator: [] as Array<number> },
  rawEager: { own: [] as Array<number>, emulator: [] as Array<number> },
  transport: { own: [] as Array<number>, emulator: [] as Array<number> }
}
const measured = async (which: keyof typeof cpu, run: () => Promise<number>) => {
  const own0 = ownCpu()
  const emulator0 = emulatorCpu()
  const rate = await run()
  // Per 1000 messages.
  cpu[which].own.push(((ownCpu() - own0) * 1000) / messages)
  cpu[which].emulator.push(((emulatorCpu() - emulator0) * 1000) / messages)
  return rate
}

const Order = Schema.Struct({ n: Schema.Number, item: Schema.String })
const payloads = await Effect.runPromise(Effect.forEach(Array.from({ length: batch }, (_, n) => n), (n) =>
  Effect.flatMap(
    Envelope.make({ type: "order.placed", source: "bench", subject: `order-${n}`, data: { n, item: "widget" } }),
    (envelope) => Effect.map(Envelope.encode(Order)(envelope), (payload) => ({ id: envelope.id, key: envelope.subject, payload }))
  )))

let topicCount = 0
const nextTopic = () => `bench-${Date.now().toString(36)}-${topicCount++}`
const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, millis)))

/**
 * The SDK client alone: PutRecords per publish, a GetRecords loop per shard, the last sequence number read
 * kept per shard after each read (the in-memory checkpoint a consumer keeps). `paced`: once caught up (a short
 * read, nothing behind) the next read starts `pollMillis` after the previous one started, the rule the
 * transport follows (Kinesis allows 5 reads a second per shard); otherwise it reads back to back and pauses only
 * after an empty read.
 */
const raw = async (paced: boolean): Promise<number> => {
  const client = new KinesisClient({ endpoint, region: "us-east-1", credentials, requestHandler: new NodeHttpHandler({ httpAgent: { keepAlive: true } }) })
  const stream = `raw-${nextTopic()}`
  // Timed from here, as the transport's run is: it creates its stream on the first publish.
  const started = performance.now()
  await client.send(new CreateStreamCommand({ StreamName: stream, ShardCount: shards }))
  // Until the stream is ACTIVE (checked every 100 ms, as the transport does): kinesalite lists no shards for
  // a moment after CreateStream, and a consumer that started then would read nothing.
  while ((await client.send(new DescribeStreamSummaryCommand({ StreamName: stream }))).StreamDescriptionSummary?.StreamStatus !== "ACTIVE") {
    await sleep(100)
  }
  const { Shards } = await client.send(new ListShardsCommand({ StreamName: stream }))
  if ((Shards?.length ?? 0) !== shards) throw new Error(`expected ${shards} shards, listed ${Shards?.length ?? 0}`)
  const produce = (async () => {
    for (let sent = 0; sent < messages; sent += batch) {
      const out = await client.send(new PutRecordsCommand({
        StreamName: stream,
        Records: payloads.map((m) => ({ Data: m.payload, PartitionKey: m.key }))
      }))
      if ((out.FailedRecordCount ?? 0) > 0) throw new Error("PutRecords refused records")
    }
  })()
  let received = 0
  const checkpoints = new Map<string, string>()
  await Promise.all((Shards ?? []).map(async (shard) => {
    let iterator = (await client.send(new GetShardIteratorCommand({ StreamName: stream, ShardId: shard.ShardId, ShardIteratorType: "TRIM_HORIZON" })))
      .ShardIterator
    while (received < messages && iterator !== undefined) {
      const readStarted = performance.now()
      const out = await client.send(new GetRecordsCommand({ ShardIterator: iterator, Limit: 1000 }))
      const records = out.Records ?? []
      received += records.length
      if (records.length > 0) checkpoints.set(shard.ShardId!, records[records.length - 1]!.SequenceNumber!)
      iterator = out.NextShardIterator
      if (paced) {
        if (records.length < 1000 && (out.MillisBehindLatest ?? 0) === 0) await sleep(pollMillis - (performance.now() - readStarted))
      } else if (records.length === 0) await sleep(pollMillis)
    }
  }))
  await produce
  const seconds = (performance.now() - started) / 1000
  client.destroy()
  if (received < messages) throw new Error(`the raw consumer read ${received} of ${messages} records`)
  return messages / seconds
}

const viaTransport = () =>
  Effect.scoped(Effect.gen(function*() {
    const transport = yield* KinesisTransport.make({ endpoint, clientConfig: { credentials }, shardCount: shards, pollInterval: `${pollMillis} millis` })
    const topic = nextTopic()
    const outgoing = payloads.map((p) => ({ ...p, headers: {} }))
    const started = performance.now()
    const produce = yield* Effect.fork(Effect.gen(function*() {
      for (let sent = 0; sent < messages; sent += batch) yield* transport.publish(topic, outgoing)
    }))
    yield* transport.subscribe(topic).pipe(
      Stream.take(messages),
      Stream.mapChunksEffect((chunk) => Effect.as(Effect.forEach(chunk, (d) => d.ack, { discard: true }), Chunk.empty<void>())),
      Stream.runDrain
    )
    yield* produce.await
    return messages / ((performance.now() - started) / 1000)
  })).pipe(Effect.provide(CheckpointStore.layerMemory()), Effect.runPromise)

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const results = { raw: [] as Array<number>, rawEager: [] as Array<number>, transport: [] as Array<number> }
const loads: Array<string> = []
try {
  // Warm-up: three of each (the JIT settles over several runs, the transport's larger code path more slowly).
  for (let i = 0; i < 3; i++) {
    await raw(true)
    await raw(false)
    await viaTransport()
  }
  const benchStart = performance.now()
  for (let round = 0; round < rounds && (round === 0 || performance.now() - benchStart < 150_000); round++) {
    // A rotating order, so a drift in the machine's load favours none of them.
    const runs = [
      async () => results.raw.push(await measured("raw", () => raw(true))),
      async () => results.transport.push(await measured("transport", viaTransport)),
      async () => results.rawEager.push(await measured("rawEager", () => raw(false)))
    ]
    for (let i = 0; i < runs.length; i++) await runs[(round + i) % runs.length]!()
    loads.push(loadavg()[0]!.toFixed(1))
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
const cpuRow = (name: string, figures: { own: Array<number>; emulator: Array<number> }) => ({
  variant: name,
  "messages/s (median)": `CPU ms per 1000 messages: client ${median(figures.own).toFixed(0)}, emulator ${median(figures.emulator).toFixed(0)}`,
  "vs raw client": `${Math.round(((median(figures.own) + median(figures.emulator)) / (median(cpu.raw.own) + median(cpu.raw.emulator))) * 100)}% of raw's CPU`,
  runs: figures.own.map((c, i) => `${c.toFixed(0)}+${figures.emulator[i]!.toFixed(0)}`).join(" / ")
})
writeResults("transport-kinesis", "Amazon Kinesis transport (kinesalite emulator): publish + consume throughput", [
  row("raw @aws-sdk/client-kinesis, reads paced as the transport's (the baseline)", rawOps, rawOps, results.raw),
  row("Bulwark KinesisTransport (memory checkpoint store), built dist", median(results.transport), rawOps, results.transport),
  row("raw @aws-sdk/client-kinesis, reading back to back (pause only after an empty read)", median(results.rawEager), rawOps, results.rawEager),
  cpuRow("raw client (paced), CPU", cpu.raw),
  cpuRow("Bulwark KinesisTransport, CPU", cpu.transport),
  cpuRow("raw client (back to back), CPU", cpu.rawEager)
], [
  `${messages} messages per run (${batch} per publish, CloudEvents JSON ~${payloads[0]!.payload.length} bytes), streams of ${shards} shards, ${results.raw.length} rounds after a warm-up of three of each, each round running the three in a rotating order; producer and consumer run at once; every run includes creating its stream and waiting until it is ACTIVE.`,
  `Load average (1 min, 2 cores) after each round: ${loads.join(", ")}; at the end (1, 5, 15 min): ${loadavg().map((l) => l.toFixed(1)).join(", ")}.`,
  "Bulwark runs from its built dist (`npm run build`), as users run it and as the AWS client runs: compiled JavaScript on both sides (earlier runs of this benchmark ran the transport from its TypeScript sources through tsx).",
  "The CPU rows: CPU time of the benchmark's process (client) and of the emulator's process per 1000 messages, per round (client+emulator), medians; CPU time is less sensitive to the machine's load than throughput, though not immune (shared cores run slower).",
  `Both publish with PutRecords (100 records a call) and read with GetRecords (up to 1000 records, one read in flight per shard) and keep the last sequence number read per shard. The baseline paces its reads as the transport does: once caught up (a short read, nothing behind), the next read starts ${pollMillis} ms after the previous one started. The transport also frames id, key and headers into each record, tracks every delivery until its ack (per-key order, visibility timeout) and moves the checkpoint as acks come in; the raw consumer only counts records.`,
  "Against kinesalite (in memory, Node) on the same machine, in a process of its own: its CPU use is in every figure, and the machine (2 cores) was shared with other work while this ran, so the figures are indicative, not precise. Real Kinesis is a network service with tens of milliseconds per call and 1 MB/s or 1000 records/s of writes per shard; the per-call overhead compared here matters less there."
])
process.exit(0)
