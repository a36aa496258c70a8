/**
 * A private Redis server for fault tests: `redis-server --port <spare port> --appendonly yes --appendfsync always
 * --dir <temporary directory>`, so a test may kill and restart it (never the shared server). Every write is in the
 * append-only file before Redis answers it, so a crash (`SIGKILL`) loses nothing acknowledged.
 *
 * Call `destroy` in `afterAll` / a finalizer: it stops the server by its pid (also after a failed test) and
 * removes the directory. A process exit that skips it still kills the server (an `exit` hook).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
// One way to find a spare port for every private test server.
import { sparePort } from "../../../sql/test/support/PrivatePostgres.js"

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

/** A private server; see the module documentation. */
export interface PrivateRedis {
  readonly port: number
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string
  /** The server's pid while it runs. */
  readonly pid: () => number | undefined
  /** Starts the server (again) on the same port and directory; resolves once it accepts clients. */
  readonly start: () => Promise<void>
  /** Stops the server: `SIGKILL` (default) is a crash, `SIGTERM` a clean shutdown. */
  readonly stop: (signal?: "SIGTERM" | "SIGKILL") => Promise<void>
  /** `stop`, stay down `downMillis` (default 300), `start`. */
  readonly restart: (options?: { readonly downMillis?: number; readonly signal?: "SIGTERM" | "SIGKILL" }) => Promise<void>
  /** Stops the server by its pid and removes its directory. Safe to call twice and after any failure. */
  readonly destroy: () => Promise<void>
}

/** Creates and starts a private server on a spare port. */
export const start = async (): Promise<PrivateRedis> => {
  const dir = mkdtempSync(join(tmpdir(), "bulwark-redis-"))
  const port = await sparePort()
  let server: ChildProcess | undefined
  let log = ""

  const running = () => server !== undefined && server.exitCode === null && server.signalCode === null
  const killNow = () => {
    if (running()) server?.kill("SIGKILL")
  }
  process.once("exit", killNow)

  const startServer = async () => {
    if (running()) return
    log = ""
    const child = spawn("redis-server", [
      "--port", String(port),
      "--bind", "127.0.0.1",
      "--dir", dir,
      "--appendonly", "yes",
      "--appendfsync", "always",
      // No RDB snapshots: the append-only file is the store, and a snapshot would only cost time.
      "--save", "",
      "--daemonize", "no"
    ], { stdio: ["ignore", "pipe", "pipe"] })
    server = child
    const ready = new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        log = (log + String(chunk)).slice(-20_000)
        if (log.includes("Ready to accept connections")) resolve()
      }
      child.stdout?.on("data", onData)
      child.stderr?.on("data", onData)
      child.once("error", reject)
      child.once("exit", (code, signal) => reject(new Error(`redis-server exited (${code ?? signal}) while starting:\n${log}`)))
    })
    const timeout = sleep(30_000).then(() => {
      throw new Error(`redis-server did not become ready within 30 s:\n${log}`)
    })
    try {
      await Promise.race([ready, timeout])
    } catch (error) {
      killNow()
      throw error
    }
  }

  const stop = async (signal: "SIGTERM" | "SIGKILL" = "SIGKILL") => {
    const child = server
    if (child === undefined || !running()) return
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
    child.kill(signal)
    const forced = sleep(15_000).then(() => {
      if (running()) child.kill("SIGKILL")
    })
    await Promise.race([exited, forced])
    await exited
  }

  let destroyed = false
  const destroy = async () => {
    if (destroyed) return
    destroyed = true
    await stop("SIGKILL").catch(() => undefined)
    process.off("exit", killNow)
    rmSync(dir, { recursive: true, force: true })
  }

  try {
    await startServer()
  } catch (error) {
    await destroy()
    throw error
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: () => (running() ? server?.pid : undefined),
    start: startServer,
    stop,
    restart: async (options = {}) => {
      await stop(options.signal)
      await sleep(options.downMillis ?? 300)
      await startServer()
    },
    destroy
  }
}
