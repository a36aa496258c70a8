/**
 * A private server for a driver's tests (an emulator in a child process of its own): started, waited for until
 * its output says it listens, and stopped by its pid — also when the test process exits without cleaning up.
 */
import { type ChildProcess, spawn, type SpawnOptions } from "node:child_process"

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

/** A running private process. */
export interface PrivateProcess {
  /** The match of `ready` in its output (a port it printed, say). */
  readonly ready: RegExpExecArray
  readonly pid: () => number | undefined
  /** Stops it by its pid. Safe to call twice and after any failure. */
  readonly destroy: () => Promise<void>
}

/** Starts `command` and resolves once its output matches `ready`; fails (having stopped it) after `within` ms. */
export const start = async (options: {
  readonly name: string
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly spawn?: Omit<SpawnOptions, "stdio">
  readonly ready: RegExp
  readonly within: number
}): Promise<PrivateProcess> => {
  let log = ""
  const child: ChildProcess = spawn(options.command, [...options.args], { ...options.spawn, stdio: ["ignore", "pipe", "pipe"] })
  const running = () => child.exitCode === null && child.signalCode === null
  const killNow = () => {
    if (running()) child.kill("SIGKILL")
  }
  process.once("exit", killNow)
  const ready = new Promise<RegExpExecArray>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      log = (log + String(chunk)).slice(-20_000)
      const match = options.ready.exec(log)
      if (match) resolve(match)
    }
    child.stdout?.on("data", onData)
    child.stderr?.on("data", onData)
    child.once("error", reject)
    child.once("exit", (code, signal) => reject(new Error(`${options.name} exited (${code ?? signal}) while starting:\n${log}`)))
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
  try {
    const match = await Promise.race([
      ready,
      sleep(options.within).then((): never => {
        throw new Error(`${options.name} did not start within ${options.within / 1000} s:\n${log}`)
      })
    ])
    return { ready: match, pid: () => (running() ? child.pid : undefined), destroy }
  } catch (error) {
    await destroy()
    throw error
  }
}
