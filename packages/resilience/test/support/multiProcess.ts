/** Runs `processes` limiter processes against one shared limit and collects what they granted and called. */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import type { Args } from "./limiterProcess.js"

const script = fileURLToPath(new URL("./limiterProcess.ts", import.meta.url))

export interface Run {
  readonly startAt: number
  readonly grants: ReadonlyArray<number>
  readonly calls: ReadonlyArray<number>
}

export const multiProcess = async (processes: number, args: Args): Promise<Run> => {
  const children = Array.from({ length: processes }, () =>
    spawn(process.execPath, ["--conditions=@bulwark/source", "--import", "tsx", script, JSON.stringify(args)], {
      stdio: ["pipe", "pipe", "pipe"]
    }))
  try {
    const outputs = children.map((child) => {
      let out = ""
      let err = ""
      child.stdout.on("data", (chunk) => (out += chunk))
      child.stderr.on("data", (chunk) => (err += chunk))
      const ready = new Promise<void>((resolve, reject) => {
        const check = () => out.includes("ready\n") && (child.stdout.off("data", check), resolve())
        child.stdout.on("data", check)
        child.once("exit", (code) => reject(new Error(`limiter process exited ${code} before it was ready: ${err}`)))
      })
      const done = new Promise<{ grants: Array<number>; calls: Array<number> }>((resolve, reject) =>
        child.once("exit", (code) =>
          code === 0
            ? resolve(JSON.parse(out.slice(out.indexOf("ready\n") + 6)))
            : reject(new Error(`limiter process exited ${code}: ${err}`))))
      return { ready, done }
    })
    await Promise.all(outputs.map((o) => o.ready))
    // Every process is connected: they all start together, a moment from now.
    const startAt = Date.now() + 300
    for (const child of children) child.stdin.write(`${startAt}\n`)
    const results = await Promise.all(outputs.map((o) => o.done))
    return { startAt, grants: results.flatMap((r) => r.grants), calls: results.flatMap((r) => r.calls) }
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL")
  }
}
