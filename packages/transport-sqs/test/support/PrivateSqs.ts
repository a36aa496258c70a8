/**
 * A private SQS emulator for the tests: `fauxqs` (npm, in memory, speaks the AWS JSON 1.0 protocol that
 * `@aws-sdk/client-sqs` uses), in a child process of its own on a port the OS picks, stopped by its pid.
 */
import * as PrivateProcess from "../../../transport/test/support/PrivateProcess.js"
import { dirname } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Layer } from "effect"

const packageDir = dirname(dirname(dirname(fileURLToPath(import.meta.url))))

/** A running private emulator. */
export interface PrivateSqs {
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
import { startFauxqs } from "fauxqs"
const server = await startFauxqs({ port: 0, logger: false })
console.log("fauxqs listening on " + server.port)
`

/** Starts a private emulator; resolves once it listens. */
export const start = async (): Promise<PrivateSqs> => {
  const started = await PrivateProcess.start({
    name: "fauxqs",
    command: process.execPath,
    args: ["--input-type=module", "-e", script],
    spawn: { cwd: packageDir },
    ready: /fauxqs listening on (\d+)/,
    within: 30_000
  })
  const port = Number(started.ready[1])
  return { port, endpoint: `http://127.0.0.1:${port}`, pid: started.pid, destroy: started.destroy }
}

/** A layer built from a private emulator that lives as long as the layer. */
export const withEmulator = <A, E, R>(build: (emulator: PrivateSqs) => Layer.Layer<A, E, R>): Layer.Layer<A, E, R> =>
  Layer.unwrapScoped(
    Effect.map(Effect.acquireRelease(Effect.promise(start), (emulator) => Effect.promise(emulator.destroy)), build)
  )
