/**
 * A private Google Cloud Pub/Sub emulator for the tests: the `cloud-pubsub-emulator` of the Google Cloud CLI's
 * `pubsub-emulator` component (Debian package `google-cloud-cli-pubsub-emulator`, Java 17), started on a spare
 * port and stopped by its pid. Found through `BULWARK_PUBSUB_EMULATOR` (the start script or the jar), else next
 * to `gcloud` on the PATH. It keeps everything in memory: a restart loses every topic and message.
 */
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, realpathSync } from "node:fs"
import { dirname, join } from "node:path"
import { Effect, Layer } from "effect"
// One way to find a spare port for every private test server.
import { sparePort } from "../../../sql/test/support/PrivatePostgres.js"
import * as PrivateProcess from "../../../transport/test/support/PrivateProcess.js"


/** The emulator's start script or jar, or a sentence saying why there is none. */
export const locate = (): { readonly command: string; readonly args: ReadonlyArray<string> } | string => {
  const given = process.env["BULWARK_PUBSUB_EMULATOR"]
  if (given !== undefined && given !== "") {
    return given.endsWith(".jar") ? { command: "java", args: ["-jar", given] } : { command: given, args: [] }
  }
  let gcloud: string
  try {
    gcloud = realpathSync(execFileSync("sh", ["-c", "command -v gcloud"], { encoding: "utf8" }).trim())
  } catch {
    return "no gcloud on the PATH: install the Debian package google-cloud-cli-pubsub-emulator (or set BULWARK_PUBSUB_EMULATOR)"
  }
  const component = join(dirname(gcloud), "..", "platform", "pubsub-emulator")
  const script = join(component, "bin", "cloud-pubsub-emulator")
  if (existsSync(script)) return { command: script, args: [] }
  const jars = existsSync(join(component, "lib")) ? readdirSync(join(component, "lib")).filter((f) => f.endsWith(".jar")) : []
  if (jars.length > 0) return { command: "java", args: ["-jar", join(component, "lib", jars[0]!)] }
  return `gcloud has no pubsub-emulator component at ${component}: install google-cloud-cli-pubsub-emulator`
}

/** A running private emulator. */
export interface PrivatePubSub {
  readonly port: number
  /** `127.0.0.1:<port>`, for `apiEndpoint`. */
  readonly endpoint: string
  readonly pid: () => number | undefined
  /** Stops it by its pid. Safe to call twice and after any failure. */
  readonly destroy: () => Promise<void>
}

/** Starts a private emulator on a spare port; resolves once it listens. */
export const start = async (): Promise<PrivatePubSub> => {
  const found = locate()
  if (typeof found === "string") throw new Error(`cannot start the Pub/Sub emulator: ${found}`)
  const port = await sparePort()
  const started = await PrivateProcess.start({
    name: "the Pub/Sub emulator",
    command: found.command,
    args: [...found.args, "--host=127.0.0.1", `--port=${port}`],
    // A small heap: the emulator holds only what a test run publishes.
    spawn: { env: { ...process.env, JAVA_OPTS: process.env["JAVA_OPTS"] ?? "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1" } },
    ready: /Server started, listening on/,
    within: 60_000
  })
  return { port, endpoint: `127.0.0.1:${port}`, pid: started.pid, destroy: started.destroy }
}

/** A layer built from a private emulator that lives as long as the layer. */
export const withEmulator = <A, E, R>(build: (emulator: PrivatePubSub) => Layer.Layer<A, E, R>): Layer.Layer<A, E, R> =>
  Layer.unwrapScoped(
    Effect.map(
      Effect.acquireRelease(Effect.promise(start), (emulator) => Effect.promise(emulator.destroy)),
      build
    )
  )
