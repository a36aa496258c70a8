/**
 * A private Kinesis emulator for the tests and the benchmark: `kinesalite` (npm; in memory on `memdown`, so its
 * optional native `leveldown` is never loaded), in a child process of its own on a port the OS picks, stopped by
 * its pid. Streams become ACTIVE at once (`createStreamMs: 0`) and the account's shard limit is lifted, since
 * every contract test creates streams of its own.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { dirname } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Layer } from "effect"

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))
const packageDir = dirname(dirname(dirname(fileURLToPath(import.meta.url))))

/** A running private emulator. */
export interface PrivateKinesis {
  readonly port: number
  /** `http://127.0.0.1:<port>`, for `endpoint`. */
  readonly endpoint: string
  readonly pid: () => number | undefined
  /** Stops it by its pid. Safe to call twice and after any failure. */
  readonly destroy: () => Promise<void>
}

/** Credentials the emulator accepts (it checks none); the SDK wants some. */
export const credentials = { accessKeyId: "bulwark-test", secretAccessKey: "bulwark-test" }

const script = `
const kinesalite = require("kinesalite")
const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100000 })
server.listen(0, "127.0.0.1", () => console.log("kinesalite listening on " + server.address().port))
`

/** Starts a private emulator; resolves once it listens. */
export const start = async (): Promise<PrivateKinesis> => {
  let log = ""
  const child: ChildProcess = spawn(process.execPath, ["-e", script], { cwd: packageDir, stdio: ["ignore", "pipe", "pipe"] })
  const running = () => child.exitCode === null && child.signalCode === null
  const killNow = () => {
    if (running()) child.kill("SIGKILL")
  }
  process.once("exit", killNow)
  const ready = new Promise<number>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      log = (log + String(chunk)).slice(-20_000)
      const match = /kinesalite listening on (\d+)/.exec(log)
      if (match) resolve(Number(match[1]))
    }
    child.stdout?.on("data", onData)
    child.stderr?.on("data", onData)
    child.once("error", reject)
    child.once("exit", (code, signal) => reject(new Error(`kinesalite exited (${code ?? signal}) while starting:\n${log}`)))
  })
  let destroyed = false
  const destroy = async () => {
    if (destroyed) return
    destroyed = true
    process.off("exit", killNow)
    if (!running()) return
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
    child.kill("SIGKILL")
    await exited
  }
  let port: number
  try {
    port = await Promise.race([
      ready,
      sleep(30_000).then((): number => {
        throw new Error(`kinesalite did not start within 30 s:\n${log}`)
      })
    ])
  } catch (error) {
    await destroy()
    throw error
  }
  return { port, endpoint: `http://127.0.0.1:${port}`, pid: () => (running() ? child.pid : undefined), destroy }
}

/** A layer built from a private emulator that lives as long as the layer. */
export const withEmulator = <A, E, R>(build: (emulator: PrivateKinesis) => Layer.Layer<A, E, R>): Layer.Layer<A, E, R> =>
  Layer.unwrapScoped(
    Effect.map(Effect.acquireRelease(Effect.promise(start), (emulator) => Effect.promise(emulator.destroy)), build)
  )
