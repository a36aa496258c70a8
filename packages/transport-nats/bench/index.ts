/**
 * Publish + consume throughput through the Bulwark NATS transport against the raw `nats` client doing the same
 * work: publish N messages with JetStream acknowledgements (message id and a key header, 1 024 in flight), then
 * consume them from a durable pull consumer, acking each. Rounds alternate between the two; medians are reported.
 */
import { Effect, Stream } from "effect"
import { AckPolicy, connect, DeliverPolicy, headers as natsHeaders, nanos } from "nats"
import { writeResults } from "../../../bench/lib.js"
import { NatsTransport } from "../src/index.js"

const url = process.env["BULWARK_NATS_URL"] ?? "nats://127.0.0.1:4222"
const total = 10_000
const rounds = 3
const chunkSize = 1_000
const batchSize = 128
const prefix = `bwbench-${Date.now().toString(36)}`
const payload = new Uint8Array(256).fill(7)

interface Timing {
  readonly publishMs: number
  readonly consumeMs: number
  /** CPU time of this process (user + system), which machine load disturbs far less than wall time. */
  readonly publishCpuMs: number
  readonly consumeCpuMs: number
}

const cpuMs = () => {
  const usage = process.cpuUsage()
  return (usage.user + usage.system) / 1000
}

const messages = (round: number) =>
  Array.from({ length: total }, (_, i) => ({ id: `r${round}-${i}`, key: `k-${i % 16}`, payload, headers: {} }))

const raw = async (round: number): Promise<Timing> => {
  const nc = await connect({ servers: url })
  const jsm = await nc.jetstreamManager()
  const js = nc.jetstream()
  const stream = `${prefix}_raw-${round}`
  const subject = `${prefix}.raw-${round}`
  await jsm.streams.add({ name: stream, subjects: [subject], duplicate_window: nanos(120_000) })
  await jsm.consumers.add(stream, {
    durable_name: "default",
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(30_000)
  })
  const outgoing = messages(round)
  const publishCpu = cpuMs()
  const publishStart = performance.now()
  for (let start = 0; start < total; start += chunkSize) {
    await Promise.all(outgoing.slice(start, start + chunkSize).map((m) => {
      const h = natsHeaders()
      h.set("Bulwark-Key", m.key)
      return js.publish(subject, m.payload, { msgID: m.id, headers: h })
    }))
  }
  const publishMs = performance.now() - publishStart
  const publishCpuMs = cpuMs() - publishCpu
  const consumer = await js.consumers.get(stream, "default")
  const consumeCpu = cpuMs()
  const consumeStart = performance.now()
  const iterator = await consumer.consume({ max_messages: batchSize })
  let received = 0
  let checksum = 0
  for await (const m of iterator) {
    // What any consumer reads from a message: its id, key, payload and delivery count.
    const id = m.headers?.get("Nats-Msg-Id") ?? ""
    const key = m.headers?.get("Bulwark-Key") ?? ""
    checksum += id.length + key.length + m.data.length + m.info.deliveryCount
    m.ack()
    if (++received === total) break
  }
  if (checksum === 0) throw new Error("nothing was read")
  const consumeMs = performance.now() - consumeStart
  const consumeCpuMs = cpuMs() - consumeCpu
  await nc.flush()
  await jsm.streams.delete(stream)
  await nc.close()
  return { publishMs, consumeMs, publishCpuMs, consumeCpuMs }
}

const bulwark = (round: number): Promise<Timing> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const nats = yield* NatsTransport.make({ servers: url, prefix, batchSize })
    const topic = `bulwark-${round}`
    const outgoing = messages(round)
    const publishCpu = cpuMs()
    const publishStart = performance.now()
    for (let start = 0; start < total; start += chunkSize) {
      yield* nats.publish(topic, outgoing.slice(start, start + chunkSize))
    }
    const publishMs = performance.now() - publishStart
    const publishCpuMs = cpuMs() - publishCpu
    const consumeCpu = cpuMs()
    const consumeStart = performance.now()
    yield* nats.subscribe(topic).pipe(
      Stream.take(total),
      Stream.runForEach((delivery) => delivery.ack)
    )
    const consumeMs = performance.now() - consumeStart
    const consumeCpuMs = cpuMs() - consumeCpu
    yield* Effect.promise(() => nats.connection.flush())
    const jsm = yield* Effect.promise(() => nats.connection.jetstreamManager())
    yield* Effect.promise(() => jsm.streams.delete((nats.names(topic) as { stream: string }).stream))
    return { publishMs, consumeMs, publishCpuMs, consumeCpuMs }
  })))

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

const perSecond = (ms: number) => Math.round(total / (ms / 1000))

const main = async () => {
  const results = { raw: [] as Array<Timing>, bulwark: [] as Array<Timing> }
  // A warm-up of each, not measured: JIT, connection set-up, the server's first stream creation.
  await raw(-1)
  await bulwark(-1)
  const started = performance.now()
  // Bounded: on a loaded machine fewer rounds are run rather than overrunning a minute.
  for (let round = 0; round < rounds && (round === 0 || performance.now() - started < 30_000); round++) {
    results.raw.push(await raw(round))
    results.bulwark.push(await bulwark(round))
  }
  const summary = (timings: ReadonlyArray<Timing>) => {
    const publish = median(timings.map((t) => t.publishMs))
    const consume = median(timings.map((t) => t.consumeMs))
    const both = median(timings.map((t) => t.publishMs + t.consumeMs))
    const perMessage = (ms: number) => Math.round((ms * 1000) / total * 10) / 10
    return {
      publish: perSecond(publish),
      consume: perSecond(consume),
      total: perSecond(both),
      publishCpu: perMessage(median(timings.map((t) => t.publishCpuMs))),
      consumeCpu: perMessage(median(timings.map((t) => t.consumeCpuMs)))
    }
  }
  const rawSummary = summary(results.raw)
  const bulwarkSummary = summary(results.bulwark)
  const ratio = (a: number, b: number) => `${Math.round((a / b) * 100)}%`
  writeResults("transport-nats", "NATS JetStream transport: publish + consume throughput, Bulwark vs raw client", [
    {
      client: "raw nats",
      "publish msg/s": rawSummary.publish,
      "consume+ack msg/s": rawSummary.consume,
      "end to end msg/s": rawSummary.total,
      "publish CPU µs/msg": rawSummary.publishCpu,
      "consume CPU µs/msg": rawSummary.consumeCpu
    },
    {
      client: "Bulwark Nats",
      "publish msg/s": bulwarkSummary.publish,
      "consume+ack msg/s": bulwarkSummary.consume,
      "end to end msg/s": bulwarkSummary.total,
      "publish CPU µs/msg": bulwarkSummary.publishCpu,
      "consume CPU µs/msg": bulwarkSummary.consumeCpu
    },
    {
      client: "Bulwark / raw",
      "publish msg/s": ratio(bulwarkSummary.publish, rawSummary.publish),
      "consume+ack msg/s": ratio(bulwarkSummary.consume, rawSummary.consume),
      "end to end msg/s": ratio(bulwarkSummary.total, rawSummary.total),
      // For CPU the ratio is raw / Bulwark, so that above 100% still means "Bulwark is at least as cheap".
      "publish CPU µs/msg": ratio(rawSummary.publishCpu, bulwarkSummary.publishCpu),
      "consume CPU µs/msg": ratio(rawSummary.consumeCpu, bulwarkSummary.consumeCpu)
    }
  ], [
    `${total} messages of ${payload.length} bytes per run, ${results.raw.length} alternating rounds after one warm-up each; medians.`,
    `Publish: JetStream publish with acknowledgement, message id and key header, ${chunkSize} in flight (Bulwark: one publish call per ${chunkSize}).`,
    `Consume: durable pull consumer, explicit ack per message, ${batchSize} messages per pull (raw: consumer.consume, reading id, key, payload and delivery count of each message; Bulwark: subscribe stream).`,
    `CPU µs/msg is this process's user + system time per message (the server's excluded); its ratio row is raw / Bulwark, the share of raw efficiency Bulwark keeps.`,
    `Server: local nats-server with JetStream file storage on the same machine, sharing its 2 cores with the benchmark.`
  ])
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
