#!/usr/bin/env node
/**
 * The `bulwark` executable. Plain JavaScript once built: TypeScript is compiled only when a command is given
 * a `.ts` file to load (a simulation), and then through `tsx`, which must be installed.
 *
 * Only Node built-ins are imported statically, so that `bulwark --help` can answer from the help text rendered
 * at build time (dist/help.ansi, written by scripts/write-help.mjs — the idea of oclif's manifest) without
 * loading Effect and every subcommand.
 */
import { readFileSync } from "node:fs"
import * as Module from "node:module"

// Node 22.1+ keeps compiled code of the CLI and its dependencies between runs (in the OS temp folder), which
// roughly halves start-up; older versions lack the function.
;(Module as { enableCompileCache?: () => unknown }).enableCompileCache?.()

const args = process.argv.slice(2)

// Help and messages without colour when NO_COLOR is set (https://no-color.org) or the output is not a terminal
// (unless FORCE_COLOR is set): @effect/cli always renders ANSI styles, so they are removed on the way out.
const noColor = process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== ""
const forceColor = process.env.FORCE_COLOR !== undefined && process.env.FORCE_COLOR !== "0"
const plain = noColor || (!process.stdout.isTTY && !forceColor)
// eslint-disable-next-line no-control-regex
const ansi = /\u001b\[[0-9;]*m/g

const cachedHelp = (): string | undefined => {
  if (args.length !== 1 || (args[0] !== "--help" && args[0] !== "-h") || process.env.BULWARK_HELP_CACHE === "off") return undefined
  try {
    return readFileSync(new URL("./help.ansi", import.meta.url), "utf8")
  } catch {
    return undefined // not built (the sources run in the repository): rendered below
  }
}

const help = cachedHelp()
if (help !== undefined) {
  process.stdout.write(plain ? help.replace(ansi, "") : help)
} else {
  if (plain) {
    const strip = (write: (...data: Array<unknown>) => void) => (...data: Array<unknown>) =>
      write(...data.map((d) => typeof d === "string" ? d.replace(ansi, "") : d))
    console.log = strip(console.log.bind(console))
    console.info = strip(console.info.bind(console))
    console.error = strip(console.error.bind(console))
    console.warn = strip(console.warn.bind(console))
  }

  // A TypeScript file on the command line (e.g. `bulwark simulate sim.ts`) needs a TypeScript loader.
  if (args.some((arg) => /\.[cm]?tsx?$/.test(arg))) {
    try {
      const tsx: { register: () => unknown } = await import("tsx/esm/api" as string)
      tsx.register()
    } catch {
      // Without tsx the import of the .ts file fails later with Node's own message; say what to do first.
      console.error("bulwark: loading a .ts file needs tsx (npm install --save-dev tsx), or pass the compiled .js file.")
    }
  }

  const [{ run }, NodeContext, NodeRuntime, { Effect }] = await Promise.all([
    import("./Cli.js"),
    import("@effect/platform-node/NodeContext"),
    import("@effect/platform-node/NodeRuntime"),
    import("effect")
  ])

  // Subcommands provide their own services; only the platform is provided here.
  const main = run(process.argv) as import("effect").Effect.Effect<number, never, import("@effect/platform-node/NodeContext").NodeContext>
  main.pipe(
    Effect.tap((code) => Effect.sync(() => { process.exitCode = code })),
    Effect.provide(NodeContext.layer),
    NodeRuntime.runMain({ disableErrorReporting: false })
  )
}
