/**
 * A private Kinesis emulator for the tests and the benchmark: `kinesalite` (npm; in memory on `memdown`, so its
 * optional native `leveldown` is never loaded), in a child process of its own on a port the OS picks, stopped by
 * its pid. Streams become ACTIVE at once (`createStreamMs: 0`) and the account's shard limit is lifted, since
 * every contract test creates streams of its own.
 */
import * as PrivateProcess from "../../../transport/test/support/PrivateProcess.js"
import { dirname } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Layer } from "effect"

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
  const started = await PrivateProcess.start({
    name: "kinesalite",
    command: process.execPath,
    args: ["-e", script],
    spawn: { cwd: packageDir },
    ready: /kinesalite listening on (\d+)/,
    within: 30_000
  })
  const port = Number(started.ready[1])
  return { port, endpoint: `http://127.0.0.1:${port}`, pid: started.pid, destroy: started.destroy }
}

/** A layer built from a private emulator that lives as long as the layer. */
export const withEmulator = <A, E, R>(build: (emulator: PrivateKinesis) => Layer.Layer<A, E, R>): Layer.Layer<A, E, R> =>
  Layer.unwrapScoped(
    Effect.map(Effect.acquireRelease(Effect.promise(start), (emulator) => Effect.promise(emulator.destroy)), build)
  )
