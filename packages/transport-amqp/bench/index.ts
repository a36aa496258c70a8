/**
 * Publish + consume throughput through the Bulwark RabbitMQ transport vs raw amqplib doing the same work:
 * persistent messages with an id and a key header, published in batches through a confirm channel (each batch
 * waits for its confirms), consumed with manual ack at the same prefetch. Consumer and publisher run together;
 * a round ends when the consumer has acked every message. Rounds alternate raw / Bulwark.
 */
import amqp from "amqplib"
import { Deferred, Effect, Stream } from "effect"
import { writeResults } from "../../../bench/lib.js"
import * as AmqpTransport from "../src/AmqpTransport.js"

const url = process.env["BULWARK_AMQP_URL"] ?? AmqpTransport.defaultUrl
const messages = Number(process.env["BENCH_MESSAGES"] ?? 12_000)
const batchSize = 100
const payload = new Uint8Array(256).fill(7)
const prefix = `bulwark-amqp-bench-${Date.now().toString(36)}`

const batches = (round: string) =>
  Array.from({ length: messages / batchSize }, (_, b) =>
    Array.from({ length: batchSize }, (_, i) => ({
      id: `${round}-${b}-${i}`,
      key: `k-${i % 16}`,
      payload,
      headers: {}
    })))

/** `ackPerBurst`: one `multiple` ack once a burst of deliveries has been handled (a microtask), as Bulwark sends them. */
const raw = async (round: number, prefetch: number, ackPerBurst = false): Promise<number> => {
  const topic = `${prefix}-raw${ackPerBurst ? "-multi" : ""}-${prefetch}-${round}`
  const queue = AmqpTransport.queueName(topic, "default")
  const model = await amqp.connect(url, { noDelay: true })
  try {
    const publisher = await model.createConfirmChannel()
    await publisher.assertExchange(topic, "fanout", { durable: true })
    await publisher.assertQueue(queue, { durable: true })
    await publisher.bindQueue(queue, topic, "")
    const consumer = await model.createChannel()
    await consumer.prefetch(prefetch)
    const work = batches(`raw${ackPerBurst ? "multi" : ""}${prefetch}-${round}`)
    let received = 0
    let warmedUp!: () => void
    const warm = new Promise<void>((resolve) => (warmedUp = resolve))
    const consumed = new Promise<void>((resolve) => {
      // Per burst: the newest delivery and how many had arrived then; the round ends once the last one is acked.
      let newest: amqp.Message | undefined
      let newestCount = 0
      const ackNewest = () => {
        if (newest === undefined) return
        consumer.ack(newest, true)
        newest = undefined
        if (newestCount === 1) warmedUp()
        if (newestCount === messages + 1) resolve()
      }
      void consumer.consume(queue, (message) => {
        if (message === null) return
        received++
        if (ackPerBurst) {
          if (newest === undefined) queueMicrotask(ackNewest)
          newest = message
          newestCount = received
          return
        }
        consumer.ack(message)
        if (received === 1) warmedUp()
        if (received === messages + 1) resolve()
      }, { noAck: false })
    })
    // One message through first, so the clock measures the steady state, not the consumer's start-up.
    publisher.publish(topic, "", Buffer.from("warm-up"), { persistent: true, messageId: "warm-up" })
    await warm
    const start = performance.now()
    for (const batch of work) {
      await new Promise<void>((resolve, reject) => {
        let pending = batch.length
        for (const m of batch) {
          publisher.publish(topic, "", Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength), {
            persistent: true,
            messageId: m.id,
            headers: { [AmqpTransport.InternalHeaders.key]: m.key }
          }, (error) => {
            if (error) reject(error)
            else if (--pending === 0) resolve()
          })
        }
      })
    }
    await consumed
    const seconds = (performance.now() - start) / 1000
    await consumer.close()
    await publisher.deleteQueue(queue)
    await publisher.deleteExchange(topic)
    return messages / seconds
  } finally {
    await model.close()
  }
}

const bulwark = (round: number, prefetch: number): Promise<number> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const topic = `${prefix}-bulwark-${prefetch}-${round}`
    const transport = yield* AmqpTransport.make({ url, prefetch })
    yield* Effect.addFinalizer(() => Effect.ignore(transport.deleteDeclared((name) => name.startsWith(topic))))
    const work = batches(`bulwark${prefetch}-${round}`)
    const warm = yield* Deferred.make<void>()
    const done = yield* Deferred.make<void>()
    let received = 0
    yield* transport.subscribe(topic).pipe(
      Stream.runForEach((delivery) =>
        Effect.flatMap(delivery.ack, () => {
          received++
          if (received === 1) return Deferred.succeed(warm, undefined)
          return received === messages + 1 ? Deferred.succeed(done, undefined) : Effect.void
        })
      ),
      Effect.forkScoped
    )
    // One message through first, so the clock measures the steady state, not the consumer's start-up.
    yield* transport.publish(topic, [{ id: "warm-up", key: "", payload: new Uint8Array(7), headers: {} }])
    yield* Deferred.await(warm)
    const start = performance.now()
    for (const batch of work) yield* transport.publish(topic, batch)
    yield* Deferred.await(done)
    const seconds = (performance.now() - start) / 1000
    return messages / seconds
  })))

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const fmt = (x: number) => Math.round(x)

const compare = async (prefetch: number, rounds: number) => {
  const rawRates: Array<number> = []
  const rawMultiRates: Array<number> = []
  const bulwarkRates: Array<number> = []
  for (let round = 0; round < rounds; round++) {
    rawRates.push(await raw(round, prefetch))
    rawMultiRates.push(await raw(round, prefetch, true))
    bulwarkRates.push(await bulwark(round, prefetch))
  }
  const rawMedian = median(rawRates)
  const rawMultiMedian = median(rawMultiRates)
  const bulwarkMedian = median(bulwarkRates)
  return [
    { variant: "raw amqplib", prefetch, "msg/s (median)": fmt(rawMedian), rounds: rawRates.map(fmt).join(" / "), "ratio to raw": "1.00" },
    {
      variant: "raw amqplib, one multiple-ack per burst",
      prefetch,
      "msg/s (median)": fmt(rawMultiMedian),
      rounds: rawMultiRates.map(fmt).join(" / "),
      "ratio to raw": (rawMultiMedian / rawMedian).toFixed(2)
    },
    {
      variant: "Bulwark AmqpTransport",
      prefetch,
      "msg/s (median)": fmt(bulwarkMedian),
      rounds: bulwarkRates.map(fmt).join(" / "),
      "ratio to raw": (bulwarkMedian / rawMedian).toFixed(2)
    }
  ]
}

const main = async () => {
  const rows = [...await compare(100, 5), ...await compare(1000, 5)]
  writeResults("transport-amqp", "RabbitMQ transport: publish + consume throughput", rows, [
    `${messages} persistent messages of ${payload.byteLength} bytes per round, published in confirmed batches of ${batchSize}, consumed with manual ack at the given prefetch, publisher and consumer on one connection (TCP_NODELAY on both), running together.`,
    "Time from the first publish to the last ack, after one warm-up message went through each (so topology and consumer start-up are outside the clock); median of the rounds, raw and Bulwark alternating.",
    "Raw acks synchronously inside amqplib's socket callback, one frame per message; Bulwark hands each delivery through a stream to an effect that acks, and sends the acks of a burst together once the consumer has worked through it (one `multiple` ack for the run of acked deliveries at the head of what the channel holds, single acks for any others). The raw client doing the same, one `multiple` ack per burst, is shown too.",
    "The broker runs on the same 2-core machine, so rounds vary a lot; compare the medians."
  ])
}

await main()
