/**
 * Publish + consume throughput over an SQS emulator (fauxqs, a private one): Bulwark's transport against
 * `@aws-sdk/client-sqs` making the same calls (SendMessageBatch of 10 carrying id and key, ReceiveMessage of 10,
 * one DeleteMessageBatch per receive, not awaited before the next receive, as the transport's default acks),
 * on standard and on FIFO queues. Each system runs in a long-lived process of its own (bench/worker.ts), warmed
 * up on its own, as a service runs only one of them; this process interleaves their rounds. Run against the
 * built packages (bench/run.ts).
 */
import { Envelope } from "@bulwark/core"
import { Effect, Schema } from "effect"
import { loadavg } from "node:os"
import { fileURLToPath } from "node:url"
import { benchWorker, writeResults } from "../../../bench/lib.js"
import { credentials, start } from "../test/support/PrivateSqs.js"
import type { Answer, Round, Setup } from "./worker.js"

const messages = Number(process.env["BENCH_MESSAGES"] ?? 3_000)
const batch = 100
const rounds = Number(process.env["BENCH_ROUNDS"] ?? 9)
// Processes per system, the rounds shared out among them in turn. One process is one draw of V8's state for its
// whole life (where its objects land, its inline caches, its optimisations): in two processes of one program,
// each 8 rounds after 4 warm-ups, one's median CPU per message was 29% above the other's (another pair: 15%).
const processes = Number(process.env["BENCH_PROCESSES"] ?? 3)
// Warm-up runs per process, each of a standard and a FIFO queue, before any round is measured. In runs with 6 and
// 10 warm-ups each process's CPU per message fell over its first 3–4 runs of each kind and then only scattered
// with the load; one more for margin.
const warmups = Number(process.env["BENCH_WARMUPS"] ?? 5)

const emulator = await start()
const endpoint = emulator.endpoint

const Order = Schema.Struct({ n: Schema.Number, item: Schema.String })
const payloads = await Effect.runPromise(Effect.forEach(Array.from({ length: batch }, (_, n) => n), (n) =>
  Effect.flatMap(
    Envelope.make({ type: "order.placed", source: "bench", subject: `order-${n}`, data: { n, item: "widget" } }),
    (envelope) => Effect.map(Envelope.encode(Order)(envelope), (payload) => ({ id: envelope.id, key: envelope.subject, payload }))
  )))

type Side = "raw" | "raw-cached" | "transport"
interface Worker {
  readonly round: (fifo: boolean) => Promise<{ readonly rate: number; readonly cpuPer1000: number }>
  readonly stop: () => void
}

/**
 * Starts a worker for one side (see `benchWorker`), hands it the emulator and the messages, and resolves once it
 * has loaded its library (its answer to the setup).
 */
const spawnWorker = async (side: Side): Promise<Worker> => {
  // Structured clone, so the payloads arrive as bytes.
  const worker = benchWorker<Answer | { readonly _tag: "Ready" }>(fileURLToPath(new URL("./worker.ts", import.meta.url)), { BENCH_SIDE: side }, {
    serialization: "advanced"
  })
  try {
    await worker.request({ _tag: "Setup", endpoint, credentials, messages, payloads } satisfies Setup)
  } catch (error) {
    worker.stop()
    throw error
  }
  const round = (fifo: boolean) =>
    worker.request({ _tag: "Round", fifo } satisfies Round).then((a) => {
      if (a._tag === "Failed") throw new Error(`the ${side} worker's round failed: ${a.message}`)
      if (a._tag === "Ready") throw new Error(`the ${side} worker answered a round with Ready`)
      return a
    })
  return { round, stop: worker.stop }
}

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
type Which = "raw" | "rawCached" | "transport" | "rawFifo" | "rawCachedFifo" | "transportFifo"
const sideOf: Record<Which, Side> = {
  raw: "raw",
  rawCached: "raw-cached",
  transport: "transport",
  rawFifo: "raw",
  rawCachedFifo: "raw-cached",
  transportFifo: "transport"
}
const empty = (): Record<Which, Array<number>> => ({ raw: [], rawCached: [], transport: [], rawFifo: [], rawCachedFifo: [], transportFifo: [] })
const results = empty()
// CPU time (ms) of the system's own process per 1000 messages: less sensitive to the machine's load than wall time.
const cpu = empty()
const warmCpu = empty()
const loads: Array<string> = []
const workers: Record<Side, Array<Worker>> = { raw: [], "raw-cached": [], transport: [] }
try {
  for (let p = 0; p < processes; p++) {
    for (const side of ["raw", "raw-cached", "transport"] as const) workers[side].push(await spawnWorker(side))
  }
  const run = async (which: Which, p: number, into: Record<Which, Array<number>>, rates?: Record<Which, Array<number>>) => {
    const answer = await workers[sideOf[which]][p]!.round(which.endsWith("Fifo"))
    into[which].push(answer.cpuPer1000)
    rates?.[which].push(answer.rate)
  }
  // Each process warms up on its own queues, one process at a time, so none competes for the cores.
  for (let p = 0; p < processes; p++) {
    for (let i = 0; i < warmups; i++) {
      for (const which of ["raw", "rawCached", "transport", "rawFifo", "rawCachedFifo", "transportFifo"] as const) await run(which, p, warmCpu)
    }
  }
  const benchStart = performance.now()
  for (let round = 0; round < rounds && (round === 0 || performance.now() - benchStart < 180_000); round++) {
    // The three systems of a kind back to back, which of them first rotating by round; each system's process
    // in turn.
    for (const kind of [["raw", "rawCached", "transport"], ["rawFifo", "rawCachedFifo", "transportFifo"]] as const) {
      for (let i = 0; i < kind.length; i++) await run(kind[(round + i) % kind.length]!, round % processes, cpu, results)
    }
    loads.push(loadavg()[0]!.toFixed(1))
  }
} finally {
  for (const worker of Object.values(workers).flat()) worker.stop()
  await emulator.destroy()
}

const row = (name: string, which: Which, base: Which) => ({
  variant: name,
  "messages/s (median)": Math.round(median(results[which])),
  "vs raw client": `${Math.round((median(results[which]) / median(results[base])) * 100)}%`,
  "client CPU ms per 1000 messages (median)": median(cpu[which]).toFixed(0),
  "vs raw client's CPU": `${Math.round((median(cpu[which]) / median(cpu[base])) * 100)}%`,
  runs: results[which].map((r) => Math.round(r)).join(" / "),
  "CPU ms per 1000 messages, each run": `warm-up ${
    Array.from({ length: processes }, (_, p) => warmCpu[which].slice(p * warmups, (p + 1) * warmups).map((c) => c.toFixed(0)).join(" ")).join(" | ")
  }; rounds ${cpu[which].map((c) => c.toFixed(0)).join(" ")}`
})
writeResults("transport-sqs", "Amazon SQS transport (fauxqs emulator): publish + consume throughput", [
  row("raw @aws-sdk/client-sqs, standard queue", "raw", "raw"),
  row("raw @aws-sdk/client-sqs with cacheMiddleware, standard queue", "rawCached", "raw"),
  row("Bulwark SqsTransport, fifo: false (built dist)", "transport", "raw"),
  row("raw @aws-sdk/client-sqs, FIFO queue (group = key)", "rawFifo", "rawFifo"),
  row("raw @aws-sdk/client-sqs with cacheMiddleware, FIFO queue", "rawCachedFifo", "rawFifo"),
  row("Bulwark SqsTransport, FIFO (default; built dist)", "transportFifo", "rawFifo")
], [
  `${messages} messages per run (${batch} per publish, CloudEvents JSON ~${payloads[0]!.payload.length} bytes); producer and consumer run at once, each run on a fresh queue.`,
  "The raw client runs twice: with its defaults (the baseline every percentage is of) and with `cacheMiddleware: true`, which the transport's client sets (the middleware stack resolved once per command class rather than on every call). The second row shows what the option alone is worth.",
  `Processes of their own: the raw client (each configuration) and the transport each run in ${processes} long-lived child processes (bench/worker.ts, started with the same loader and conditions, so Bulwark loads from its dist), each loading only its own library; in one process the systems would share the AWS SDK's code and heap and shape each other's JIT state and garbage collection, where a service runs only one of them. Several processes per system because one process is one draw of V8's state for its whole life: in two processes of one program, each 8 rounds after 4 warm-ups, one's median CPU per message was 29% above the other's (another pair: 15%). Each process first runs ${warmups} warm-up runs of a standard and of a FIFO queue (not counted; the warm-up column lists them process by process), one process at a time; then ${results.raw.length} measured rounds, round r on each system's process r mod ${processes}, the three systems back to back on each kind of queue, which first rotating by round. This process only asks for a round and collects its figures; it does no SQS work.`,
  `Load average (1 min, 2 cores) after each round: ${loads.join(", ")}; at the end (1, 5, 15 min): ${loadavg().map((l) => l.toFixed(1)).join(", ")}.`,
  "Bulwark runs from its built dist (`npm run build`), as users run it and as the AWS client runs: compiled JavaScript on both sides.",
  "Before the clock starts, each side sends, receives and deletes one message on its fresh queue (the transport creates its queue, its dead-letter queue and the redrive policy on first use; the raw client creates its queue with CreateQueue).",
  "Both send SendMessageBatch of 10 (the payload, JSON, as its UTF-8 text; id and key as message attributes), receive with ReceiveMessage of 10 (long poll 1 s, one receive in flight) and delete once per receive with DeleteMessageBatch, without waiting for the delete before the next receive (the transport's acks complete once queued).",
  "Client CPU: CPU time of the system's own process over the whole run (its queue set-up and the message before the clock included) per 1000 messages; the emulator runs in a process of its own and is not counted. The last column lists it for each warm-up run and each measured round. Until 2026-12-07 both systems ran in the benchmark's one process, rounds interleaved; their figures (transport CPU 1.24–1.53× the raw client's) included that sharing and do not compare with these. Runs before that date and the first ones of it sent every payload in base64 on both sides, and the transport an encoding marker attribute besides: those figures do not compare with these either.",
  "Against fauxqs (in memory, Node) on the same machine, in a process of its own: its CPU use is in every throughput figure, and the machine (2 cores) was shared with other work while this ran, so the figures are indicative, not precise. Real SQS is a network service with tens of milliseconds per call; the per-call overhead compared here matters less there."
])
process.exit(0)
