/**
 * A private PostgreSQL server for fault tests: its own data directory in a temporary directory and its own
 * spare port, so a test may restart or kill it (never the shared server). `initdb` and `pg_ctl` run as the
 * `postgres` user when the tests run as root (PostgreSQL refuses to run as root), as the current user otherwise.
 *
 * Call `destroy` in `afterAll`: it stops the server by its pid (also after a failed test) and removes the
 * directory. A process exit that skips `afterAll` still kills the postmaster (an `exit` hook).
 */
import { execFile, execFileSync } from "node:child_process"
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { delimiter, join } from "node:path"
import { promisify } from "node:util"

const run = promisify(execFile)

// Where the server binaries are: `BULWARK_PG_BIN`, else what `pg_config --bindir` says (Debian keeps them off
// PATH), else the directory on PATH that holds `pg_ctl`.
const findBinDir = (): string | undefined => {
  const configured = process.env["BULWARK_PG_BIN"]
  if (configured !== undefined && configured !== "") return configured
  try {
    const dir = execFileSync("pg_config", ["--bindir"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim()
    if (existsSync(join(dir, "pg_ctl"))) return dir
  } catch {
    // No pg_config: look on PATH.
  }
  return (process.env["PATH"] ?? "").split(delimiter).find((dir) => dir !== "" && existsSync(join(dir, "pg_ctl")))
}

/** Where the PostgreSQL server binaries are (`initdb`, `pg_ctl`), if anywhere. */
export const binDir: string | undefined = findBinDir()

const asRoot = typeof process.getuid === "function" && process.getuid() === 0

const spawnAs = (command: string, args: ReadonlyArray<string>, timeout = 60_000) => {
  if (binDir === undefined) return Promise.reject(new Error("no PostgreSQL server binaries: set BULWARK_PG_BIN"))
  return asRoot
    ? run("runuser", ["-u", "postgres", "--", join(binDir, command), ...args], { timeout })
    : run(join(binDir, command), [...args], { timeout })
}

/** A free TCP port on 127.0.0.1 (asked from the kernel, then released for the server to take). */
export const sparePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port")))
    })
  })

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

/** A private server; see the module documentation. */
export interface PrivatePostgres {
  readonly port: number
  /** `postgres://postgres@127.0.0.1:<port>/postgres` (trust authentication). */
  readonly url: string
  /** The postmaster's pid while it runs. */
  readonly pid: () => number | undefined
  readonly start: () => Promise<void>
  /** Stops the server; `immediate` (default) is a crash as far as clients are concerned. */
  readonly stop: (mode?: "fast" | "immediate") => Promise<void>
  /** `pg_ctl restart -m immediate`, optionally staying down `downMillis` in between (stop, wait, start). */
  readonly restart: (options?: { readonly downMillis?: number }) => Promise<void>
  /** SIGKILLs the postmaster (its backends exit when they notice); `start` recovers the data directory. */
  readonly kill: () => Promise<void>
  /** Stops the server by its pid and removes its directory. Safe to call twice and after any failure. */
  readonly destroy: () => Promise<void>
}

/** Creates and starts a private server on a spare port; `settings` are extra server settings (e.g. `wal_level`). */
export const start = async (options: { readonly settings?: Readonly<Record<string, string>> } = {}): Promise<PrivatePostgres> => {
  const dir = mkdtempSync(join(tmpdir(), "bulwark-pg-"))
  const data = join(dir, "data")
  if (asRoot) chownSync(dir, ...(await postgresIds()))
  const port = await sparePort()
  await spawnAs("initdb", ["-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
  // fsync off: a test's "crash" is a process crash, where the OS keeps what was written; it saves seconds.
  const serverOptions = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50${
    Object.entries(options.settings ?? {}).map(([name, value]) => ` -c ${name}=${value}`).join("")
  }`
  const pidFile = join(data, "postmaster.pid")
  const pid = () => {
    try {
      const value = Number(readFileSync(pidFile, "utf8").split("\n")[0])
      return Number.isInteger(value) && value > 0 ? value : undefined
    } catch {
      return undefined
    }
  }
  const killNow = () => {
    const p = pid()
    if (p === undefined) return
    try {
      process.kill(p, "SIGKILL")
    } catch {
      // Already gone.
    }
  }
  process.once("exit", killNow)

  const startServer = async () => {
    await spawnAs("pg_ctl", ["-D", data, "-o", serverOptions, "-l", join(dir, "log"), "-w", "-t", "60", "start"])
  }
  const stop = async (mode: "fast" | "immediate" = "immediate") => {
    await spawnAs("pg_ctl", ["-D", data, "-m", mode, "-w", "-t", "30", "stop"])
  }
  const alive = (p: number) => {
    try {
      process.kill(p, 0)
      return true
    } catch {
      return false
    }
  }
  const kill = async () => {
    const p = pid()
    if (p === undefined) return
    process.kill(p, "SIGKILL")
    while (alive(p)) await sleep(20)
    // The backends notice their postmaster is gone on their next wake-up; wait for the port to be free.
    for (let i = 0; i < 250; i++) {
      try {
        await spawnAs("pg_isready", ["-h", "127.0.0.1", "-p", String(port), "-t", "1"])
        await sleep(20)
      } catch {
        return
      }
    }
  }
  let destroyed = false
  const destroy = async () => {
    if (destroyed) return
    destroyed = true
    const p = pid()
    if (p !== undefined) {
      await stop("immediate").catch(() => undefined)
      if (alive(p)) killNow()
    }
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
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    pid,
    start: startServer,
    stop,
    restart: async (options = {}) => {
      if (options.downMillis === undefined || options.downMillis <= 0) {
        await spawnAs("pg_ctl", ["-D", data, "-m", "immediate", "-o", serverOptions, "-l", join(dir, "log"), "-w", "-t", "60", "restart"])
        return
      }
      await stop("immediate")
      await sleep(options.downMillis)
      await startServer()
    },
    kill,
    destroy
  }
}

const postgresIds = async (): Promise<[number, number]> => {
  const { stdout } = await run("id", ["-u", "postgres"])
  const { stdout: group } = await run("id", ["-g", "postgres"])
  return [Number(stdout.trim()), Number(group.trim())]
}
