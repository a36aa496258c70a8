// Module resolution hook for the benchmarks: any module of a package's `src/` (reached by a relative import or
// through the `@bulwark/source` condition) resolves to the same module compiled in that package's `dist/`.
// Running sources through tsx keeps function names (esbuild's keepNames wraps every function created per call),
// a cost compiled code does not pay; the peers the benchmarks compare with run compiled JavaScript too.
import { existsSync } from "node:fs"
import { fileURLToPath, pathToFileURL } from "node:url"

const source = /^(.*[\\/](?:packages|examples)[\\/][^\\/]+)[\\/]src[\\/](.+)\.(?:ts|js|mts|mjs)$/

const compiled = (url) => {
  if (!url.startsWith("file:")) return undefined
  const match = source.exec(fileURLToPath(url))
  if (match === null) return undefined
  const target = `${match[1]}/dist/${match[2]}.js`
  return existsSync(target) ? pathToFileURL(target).href : undefined
}

export async function resolve(specifier, context, nextResolve) {
  let resolved
  try {
    resolved = await nextResolve(specifier, context)
  } catch (error) {
    // `../src/X.js` naming a TypeScript file: resolvable only by tsx, which may come later in the chain.
    const guess = context.parentURL !== undefined && specifier.startsWith(".") ? compiled(new URL(specifier, context.parentURL).href) : undefined
    if (guess === undefined) throw error
    return { url: guess, format: "module", shortCircuit: true }
  }
  const url = compiled(resolved.url)
  return url === undefined ? resolved : { url, format: "module", shortCircuit: true }
}
