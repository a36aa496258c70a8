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
