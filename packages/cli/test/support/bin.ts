import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { inject } from "vitest"

declare module "vitest" {
  export interface ProvidedContext {
    /** The bundled CLI entry point, or "" when bundling failed (the tests then spawn the launcher). */
    readonly bulwarkCliBundle: string
  }
}

/** The repository's launcher for the CLI (tsx over the TypeScript sources). */
export const launcher: string = fileURLToPath(new URL("../../bin/bulwark.mjs", import.meta.url))

/**
 * The CLI entry point for tests that spawn the binary: the bundle of the same sources the global setup built
 * for this run, or the launcher when there is none. A command given a TypeScript module (a simulation, a
 * contracts file) needs the launcher, so that module and the CLI share one copy of the workspace packages.
 */
export const bin: string = inject("bulwarkCliBundle") || launcher

/** How a spawned CLI run ended and what it printed. */
export interface CliRun {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
  /** Killed after `timeoutMs` (then `code` is null). */
  readonly killed: boolean
}

/** What {@link runCli} may set besides the arguments. */
export interface CliOptions {
  /** Variables on top of this process's environment, less those that choose a database, a data directory or a transport. */
  readonly env?: Record<string, string>
  readonly cwd?: string
  /** Written to the child's standard input, then closed; without it the child's input is empty. */
  readonly stdin?: string
  /** Kills a process that has not exited by then. Default 200 s. */
  readonly timeoutMs?: number
  /** The entry point. Default {@link bin}; a command given a TypeScript module needs {@link launcher}. */
  readonly entry?: string
}

// Chosen by each test for itself: inherited from the shell, they would point a test at someone else's store.
const chosenByTests = ["BULWARK_DATABASE_URL", "BULWARK_DATA_DIR", "BULWARK_DLQ_CREATE_STORE", "BULWARK_TRANSPORT"]

/**
 * Runs the CLI with `args` in a child process and collects its output. Asynchronous, never `spawnSync`: a
 * command can take a minute on a loaded machine, and a test worker whose event loop is blocked that long cannot
 * answer the test runner (vitest gives up on a call after 60 s).
 */
export const runCli = (args: ReadonlyArray<string>, options: CliOptions = {}): Promise<CliRun> =>
  new Promise((resolve, reject) => {
    const env: Record<string, string | undefined> = { ...process.env }
    for (const name of chosenByTests) delete env[name]
    const child = spawn(process.execPath, [options.entry ?? bin, ...args], {
      env: { ...env, ...options.env },
      stdio: [options.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      ...(options.cwd === undefined ? {} : { cwd: options.cwd })
    })
    let stdout = ""
    let stderr = ""
    let killed = false
    const timer = setTimeout(() => {
      killed = true
      child.kill("SIGKILL")
    }, options.timeoutMs ?? 200_000)
    child.stdout!.setEncoding("utf-8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr!.setEncoding("utf-8").on("data", (chunk: string) => (stderr += chunk))
    child.on("error", (error) => {
      clearTimeout(timer)
      reject(error)
    })
    child.on("close", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, killed })
    })
    if (options.stdin !== undefined) child.stdin!.end(options.stdin)
  })
