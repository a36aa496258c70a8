#!/usr/bin/env node
// The repository's launcher for the CLI: runs the TypeScript sources (with the "@bulwark/source" export
// condition, so the other packages resolve to their sources too). The published binary is dist/bin.js.
import { register } from "node:module"
import { register as registerTsx } from "tsx/esm/api"

register(
  "data:text/javascript," + encodeURIComponent(
    "export const resolve = (specifier, context, next) => " +
      "next(specifier, { ...context, conditions: [\"@bulwark/source\", ...context.conditions] })"
  )
)
registerTsx()
await import("../src/bin.ts")
