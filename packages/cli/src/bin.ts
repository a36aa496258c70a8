#!/usr/bin/env node
/**
 * The `bulwark` executable. Plain JavaScript once built: TypeScript is compiled only when a command is given
 * a `.ts` file to load (a simulation), and then through `tsx`, which must be installed.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect } from "effect"
import * as Module from "node:module"

// Node 22.1+ keeps compiled code of the CLI and its dependencies between runs (in the OS temp folder), which
// roughly halves start-up; older versions lack the function.
;(Module as { enableCompileCache?: () => unknown }).enableCompileCache?.()

const args = process.argv.slice(2)

// Help and messages without colour when the output is not a terminal or NO_COLOR is set
// (https://no-color.org): @effect/cli always renders ANSI styles, so they are removed on the way out.
if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== "" || !process.stdout.isTTY) {
  // eslint-disable-next-line no-control-regex
  const ansi = /\u001b\[[0-9;]*m/g
  const plain = (write: (...data: Array<unknown>) => void) => (...data: Array<unknown>) =>
    write(...data.map((d) => typeof d === "string" ? d.replace(ansi, "") : d))
  console.log = plain(console.log.bind(console))
  console.info = plain(console.info.bind(console))
  console.error = plain(console.error.bind(console))
  console.warn = plain(console.warn.bind(console))
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

const { run } = await import("./Cli.js")

// Subcommands provide their own services; only the platform is provided here.
const main = run(process.argv) as Effect.Effect<number, never, NodeContext.NodeContext>
main.pipe(
  Effect.tap((code) => Effect.sync(() => { process.exitCode = code })),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disableErrorReporting: false })
)
