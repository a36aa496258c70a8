/**
 * A vitest global setup: bundles the CLI's TypeScript sources once per run, so the tests that spawn the binary
 * do not pay for the launcher's start-up on every spawn (through tsx, each spawn resolves and loads hundreds of
 * workspace modules via loader hooks: several seconds per spawn, against well under two for the bundle).
 *
 * Workspace packages are resolved with the "@bulwark/source" condition and compiled into the bundle, as the
 * launcher would load them; everything from node_modules stays external (loaded by Node, as for the published
 * binary), and the dynamically imported transports stay separate chunks, loaded only when a command needs them.
 */
import type { TestProject } from "vitest/node"
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { dirname, join, resolve, sep } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

// The provided value's type is declared beside its reader.
import type {} from "./bin.js"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..")
const rootModules = join(root, "node_modules") + sep

/**
 * Bundles the workspace sources reachable from `entry` (a TypeScript file) into `outdir` as `<name>.js` and
 * answers its path. `transform`, when given, may change a source file's text before it is compiled.
 */
export const bundleSources = async (
  entry: string,
  outdir: string,
  name: string,
  transform?: (path: string, text: string) => string
): Promise<string> => {
  const esbuild = await import("esbuild")
  await esbuild.build({
    entryPoints: { [name]: entry },
    outdir,
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    conditions: ["@bulwark/source"],
    logLevel: "silent",
    plugins: [{
      name: "bulwark-source-bundle",
      setup(build) {
        // Packages from node_modules stay external. The bundle lives in the root node_modules/.cache, so a bare
        // specifier resolves from there; one that a source file resolves elsewhere (a package's own nested
        // node_modules) is imported by its resolved file URL instead, so Node loads the same copy as for the sources.
        build.onResolve({ filter: /^[^./]/ }, async (args) => {
          if (args.path.startsWith("@bulwark/") || args.pluginData === "nested") return undefined
          const resolved = await build.resolve(args.path, { kind: args.kind, importer: args.importer, resolveDir: args.resolveDir, pluginData: "nested" })
          const fromRoot = resolved.path.startsWith(rootModules) && !resolved.path.slice(rootModules.length).includes(`${sep}node_modules${sep}`)
          const keepBare = resolved.errors.length > 0 || resolved.external || fromRoot
          return { path: keepBare ? args.path : pathToFileURL(resolved.path).href, external: true }
        })
        // import.meta.url keeps naming the source file, so paths relative to it (package.json) still resolve.
        build.onLoad({ filter: /\.ts$/ }, (args) => {
          const text = readFileSync(args.path, "utf8")
          return {
            contents: (transform === undefined ? text : transform(args.path, text))
              .replaceAll("import.meta.url", JSON.stringify(pathToFileURL(args.path).href)),
            loader: "ts"
          }
        })
      }
    }]
  })
  return join(outdir, `${name}.js`)
}

/** A fresh folder for a bundle, in the root `node_modules/.cache` (bare specifiers resolve from there). */
export const bundleDir = (prefix: string): string => {
  const cache = join(root, "node_modules", ".cache")
  mkdirSync(cache, { recursive: true })
  return mkdtempSync(join(cache, prefix))
}

const bundle = (outdir: string): Promise<string> => bundleSources(join(root, "packages/cli/src/bin.ts"), outdir, "bin")

/** Bundles the CLI and provides its path to the tests (again before each rerun in watch mode, so the bundle
 * follows the sources); removes it when the run ends. */
export default async function setup(project: TestProject): Promise<() => void> {
  const outdir = bundleDir("bulwark-cli-")
  const provide = async () => {
    try {
      project.provide("bulwarkCliBundle", await bundle(outdir))
    } catch (error) {
      console.warn(`bundling the CLI failed, the tests spawn the launcher instead: ${String(error)}`)
      project.provide("bulwarkCliBundle", "")
    }
  }
  await provide()
  project.onTestsRerun(provide)
  return () => rmSync(outdir, { recursive: true, force: true })
}
