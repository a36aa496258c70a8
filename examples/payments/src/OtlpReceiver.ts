/**
 * A tiny OTLP/HTTP receiver on loopback and a way to run the example as `npm start` does, against it. The
 * exporter is told to send OTLP/JSON (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`), so no protobuf decoder is needed.
 * Used by the OTLP test and by `npm run waterfall` (the HTML trace view in the docs).
 */
import { Waterfall } from "@bulwark/tracing"
import { spawn } from "node:child_process"
import { createServer, type IncomingMessage, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { fileURLToPath } from "node:url"

/** One exported metric data point, flattened. */
export interface Point {
  readonly name: string
  readonly monotonic: boolean | undefined
  readonly unit: string
  /** The point's attributes as JSON, to tell series apart. */
  readonly attributes: string
  readonly value: number
  readonly timeNanos: number
}

/** What the receiver got so far. */
export interface Receiver {
  readonly url: string
  readonly spans: Array<Waterfall.Span>
  readonly points: Array<Point>
  /** `path content-type` of every request. */
  readonly requests: Array<string>
  readonly close: () => Promise<void>
}

const pointsOf = (body: any): Array<Point> => {
  const points: Array<Point> = []
  for (const rm of body?.resourceMetrics ?? []) {
    for (const sm of rm.scopeMetrics ?? []) {
      for (const m of sm.metrics ?? []) {
        const data = m.sum ?? m.gauge ?? m.histogram
        for (const p of data?.dataPoints ?? []) {
          const attributes = Object.fromEntries((p.attributes ?? []).map((a: any) => [a.key, a.value?.stringValue ?? a.value]))
          points.push({
            name: String(m.name),
            monotonic: m.sum?.isMonotonic,
            unit: String(m.unit ?? ""),
            attributes: JSON.stringify(attributes),
            value: Number(p.asDouble ?? p.asInt ?? p.count ?? 0),
            timeNanos: Number(p.timeUnixNano ?? 0)
          })
        }
      }
    }
  }
  return points
}

/** Starts the receiver on 127.0.0.1 (an ephemeral port); it answers every export with 200. */
export const start = (): Promise<Receiver> =>
  new Promise((resolve) => {
    const spans: Array<Waterfall.Span> = []
    const points: Array<Point> = []
    const requests: Array<string> = []
    const server: Server = createServer((request: IncomingMessage, response) => {
      const chunks: Array<Buffer> = []
      request.on("data", (chunk: Buffer) => chunks.push(chunk))
      request.on("end", () => {
        requests.push(`${request.url} ${request.headers["content-type"]}`)
        let body: unknown = {}
        try {
          body = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}")
        } catch {
          // Not OTLP/JSON (a protobuf export): recorded in `requests` only.
        }
        if (request.url === "/v1/traces") spans.push(...Waterfall.fromOtlpJson(body))
        if (request.url === "/v1/metrics") points.push(...pointsOf(body))
        response.writeHead(200, { "content-type": "application/json" })
        response.end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo
      resolve({
        url: `http://127.0.0.1:${port}`,
        spans,
        points,
        requests,
        close: () => new Promise<void>((done) => server.close(() => done()))
      })
    })
  })

/** The `OTEL_*` variables that point the example at `receiver` (OTLP/JSON, small batches, no dropped spans). */
export const otelEnv = (receiver: Receiver): Record<string, string> => ({
  OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
  OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
  OTEL_METRIC_EXPORT_INTERVAL: "1000",
  OTEL_LOGS_EXPORTER: "none",
  // The run ends in seconds; a queue large enough that no span is dropped keeps the export whole.
  OTEL_BSP_MAX_QUEUE_SIZE: "200000",
  OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "2000",
  OTEL_BSP_SCHEDULE_DELAY: "200"
})

const exampleDir = fileURLToPath(new URL("..", import.meta.url))

/** Runs `src/main.ts` as `npm start` does, in a child process, with `env` over a clean environment. */
export const runExample = (env: Record<string, string>) =>
  new Promise<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }>((resolve) => {
    const inherited = Object.fromEntries(
      Object.entries(process.env).filter(([name]) =>
        !name.startsWith("OTEL_") && !name.startsWith("PAYMENTS_") && !name.startsWith("BULWARK_")
      )
    )
    const child = spawn(process.execPath, ["--import", "tsx", "--conditions=@bulwark/source", "src/main.ts"], {
      cwd: exampleDir,
      env: { ...inherited, ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })
