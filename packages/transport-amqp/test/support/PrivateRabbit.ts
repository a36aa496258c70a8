/**
 * A private RabbitMQ node for fault tests, so a test may kill and restart it (never the shared broker): its own
 * node name, AMQP port and distribution port (spare ports), its own Mnesia and log directories and config file in
 * a temporary directory, no plugins (so no management listener). The node registers with the machine's `epmd`
 * under its own name, like any Erlang node; `rabbitmq-server` must be installed (`RABBITMQ_SERVER` overrides the path).
 *
 * Booting a node takes several seconds. Call `destroy` in `afterAll` / a finalizer: it stops the node by its pid
 * (also after a failed test) and removes the directory. A process exit that skips it still kills the node.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
// One way to find a spare port for every private test server.
import { sparePort } from "../../../sql/test/support/PrivatePostgres.js"

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

// The package script, not the /usr/sbin wrapper (which switches to the system's rabbitmq user and home).
const serverScript = process.env["RABBITMQ_SERVER"] ??
  ["/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/local/sbin/rabbitmq-server", "/opt/homebrew/sbin/rabbitmq-server"]
    .find((path) => existsSync(path)) ?? "rabbitmq-server"

/** A private node; see the module documentation. */
export interface PrivateRabbit {
  readonly port: number
  /** `amqp://guest:guest@127.0.0.1:<port>/` (guest may log in over loopback). */
  readonly url: string
  /** The node's pid while it runs. */
  readonly pid: () => number | undefined
  /** Starts the node (again) with the same name, ports and data; resolves once it accepts AMQP clients. */
  readonly start: () => Promise<void>
  /** Stops the node: `SIGKILL` (default) is a crash, `SIGTERM` a clean shutdown. */
  readonly stop: (signal?: "SIGTERM" | "SIGKILL") => Promise<void>
  /** `stop`, stay down `downMillis` (default 0), `start`. */
  readonly restart: (options?: { readonly downMillis?: number; readonly signal?: "SIGTERM" | "SIGKILL" }) => Promise<void>
  /** Stops the node by its pid and removes its directory. Safe to call twice and after any failure. */
  readonly destroy: () => Promise<void>
}

/** Creates and starts a private node on spare ports. */
export const start = async (): Promise<PrivateRabbit> => {
  const dir = mkdtempSync(join(tmpdir(), "bulwark-rabbit-"))
  const port = await sparePort()
  const distPort = await sparePort()
  writeFileSync(join(dir, "rabbitmq.conf"), `listeners.tcp.1 = 127.0.0.1:${port}\n`)
  writeFileSync(join(dir, "enabled_plugins"), "[].\n")
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    // The Erlang cookie is created under HOME: a private one, never the system node's.
    HOME: dir,
    // A file that does not exist: the system's rabbitmq-env.conf (its node name, its port) must not apply.
    RABBITMQ_CONF_ENV_FILE: join(dir, "rabbitmq-env.conf"),
    RABBITMQ_CONFIG_FILE: join(dir, "rabbitmq.conf"),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, "enabled_plugins"),
    RABBITMQ_NODENAME: `bulwark-test-${port}@localhost`,
    RABBITMQ_NODE_IP_ADDRESS: "127.0.0.1",
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: join(dir, "mnesia"),
    RABBITMQ_LOG_BASE: join(dir, "log"),
    RABBITMQ_PID_FILE: join(dir, "pid"),
    ERL_EPMD_ADDRESS: "127.0.0.1",
    // The script then execs the Erlang VM itself instead of staying as a parent shell: the child's pid is the node's.
    RUNNING_UNDER_SYSTEMD: "true"
  }
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
    const child = spawn(serverScript, [], { stdio: ["ignore", "pipe", "pipe"], env, cwd: dir })
    server = child
    const ready = new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        log = (log + String(chunk)).slice(-20_000)
        if (/Starting broker\.\.\. completed/.test(log)) resolve()
      }
      child.stdout?.on("data", onData)
      child.stderr?.on("data", onData)
      child.once("error", reject)
      child.once("exit", (code, signal) => reject(new Error(`rabbitmq-server exited (${code ?? signal}) while starting:\n${log}`)))
    })
    const timeout = sleep(90_000).then(() => {
      throw new Error(`rabbitmq-server did not become ready within 90 s:\n${log}`)
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
    const forced = sleep(30_000).then(() => {
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
    url: `amqp://guest:guest@127.0.0.1:${port}/`,
    pid: () => (running() ? server?.pid : undefined),
    start: startServer,
    stop,
    restart: async (options = {}) => {
      await stop(options.signal)
      if ((options.downMillis ?? 0) > 0) await sleep(options.downMillis ?? 0)
      await startServer()
    },
    destroy
  }
}
