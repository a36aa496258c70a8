import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import type { NodeContext as Ctx } from "@effect/platform-node"
import { run } from "./Cli.js"

// Subcommands provide their own services; only the platform is provided here.
(run(process.argv) as Effect.Effect<number, never, Ctx.NodeContext>).pipe(
  Effect.tap((code) => Effect.sync(() => { process.exitCode = code })),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disableErrorReporting: false })
)
