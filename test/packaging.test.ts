/**
 * The published shape of every package, checked without building anything (the consumer test builds, packs
 * and installs them): manifests as scripts/sync-packages.mjs writes them, Effect as a peer, no "*" ranges,
 * a subpath for every public module, a LICENSE and a README, and a build config that compiles only src/.
 */
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const root = fileURLToPath(new URL("..", import.meta.url))
const read = (path: string) => readFileSync(join(root, path), "utf8")
const dirs = readdirSync(join(root, "packages")).sort().filter((d) => existsSync(join(root, "packages", d, "package.json")))
const license = read("LICENSE")

describe("package manifests", () => {
  it("are what scripts/sync-packages.mjs writes", () => {
    execFileSync(process.execPath, [join(root, "scripts/sync-packages.mjs"), "--check"], { stdio: "pipe" })
  })

  for (const dir of dirs) {
    const pkg = JSON.parse(read(`packages/${dir}/package.json`))
    describe(pkg.name, () => {
      it("depends on Effect as a peer, on Bulwark packages by version range, never on *", () => {
        expect(Object.keys(pkg.dependencies ?? {}).filter((d) => d === "effect" || d.startsWith("@effect/"))).toEqual([])
        expect(pkg.peerDependencies?.effect).toMatch(/^\^3\./)
        for (const [name, range] of Object.entries<string>({ ...pkg.dependencies, ...pkg.peerDependencies, ...pkg.devDependencies })) {
          expect(range, name).not.toBe("*")
          if (name.startsWith("@bulwark/")) expect(range, name).toMatch(/^\^\d+\.\d+\.\d+$/)
        }
        for (const peer of Object.keys(pkg.peerDependencies ?? {})) {
          if (peer !== "vitest" && peer !== "@effect/vitest") expect(pkg.devDependencies?.[peer], peer).toBe(pkg.peerDependencies[peer])
        }
      })

      it("exports compiled JavaScript and types for the barrel and every public module, sources only under a condition", () => {
        const exports = pkg.exports as Record<string, string | Record<string, string>>
        for (const [subpath, target] of Object.entries(exports)) {
          if (subpath === "./package.json") continue
          expect(Object.keys(target as object), subpath).toEqual(["@bulwark/source", "types", "import", "default"])
          const { "@bulwark/source": source } = target as Record<string, string>
          expect(existsSync(join(root, "packages", dir, source!)), `${subpath} → ${source}`).toBe(true)
          expect(subpath.includes("internal"), subpath).toBe(false)
        }
        expect(pkg.files).toEqual(["dist", "src", "!dist/**/*.tsbuildinfo"])
        expect(pkg.sideEffects === false || pkg.name === "@bulwark/cli").toBe(true)
        expect(pkg.engines?.node).toBe(JSON.parse(read("package.json")).engines.node)
        expect(pkg.repository?.directory).toBe(`packages/${dir}`)
        expect(pkg.license).toBe("MIT")
        expect(pkg.scripts?.build).toBe(pkg.name === "@bulwark/cli"
          ? "tsc -b tsconfig.build.json && node scripts/write-help.mjs"
          : "tsc -b tsconfig.build.json")
      })

      it("ships a LICENSE and a README", () => {
        expect(read(`packages/${dir}/LICENSE`)).toBe(license)
        expect(existsSync(join(root, "packages", dir, "README.md"))).toBe(true)
      })

      it("builds src/ only, after the Bulwark packages it depends on", () => {
        const config = JSON.parse(read(`packages/${dir}/tsconfig.build.json`))
        expect(config.extends).toBe("../../tsconfig.build.base.json")
        const internal = Object.keys(pkg.dependencies ?? {}).filter((d) => d.startsWith("@bulwark/"))
        const referenced = (config.references ?? []).map((r: { path: string }) => r.path.split("/")[1])
        expect(referenced.sort()).toEqual(internal.map((d) => d.slice("@bulwark/".length)).sort())
      })
    })
  }
})

describe("barrels", () => {
  it("leave out the drivers that load a client library", () => {
    const barrel = (dir: string) => read(`packages/${dir}/src/index.ts`)
    expect(barrel("idempotency")).not.toMatch(/from "\.\/IdempotencyStore\/Redis\.js"/)
    expect(barrel("circuit-breaker")).not.toMatch(/Redis/)
    expect(barrel("tracing")).not.toMatch(/from "\.\/Otel\.js"/)
    for (const dir of dirs.filter((d) => d !== "cli")) expect(barrel(dir), dir).not.toMatch(/from "\.\/Cli\.js"/)
  })
})

describe("the CLI", () => {
  it("runs compiled JavaScript and needs tsx only as an optional peer", () => {
    const pkg = JSON.parse(read("packages/cli/package.json"))
    expect(pkg.bin).toEqual({ bulwark: "./dist/bin.js" })
    expect(pkg.dependencies?.tsx).toBeUndefined()
    expect(pkg.peerDependenciesMeta?.tsx).toEqual({ optional: true })
    expect(pkg.peerDependencies?.["@effect/cluster"]).toBeUndefined()
    expect(pkg.peerDependencies?.["@effect/rpc"]).toBeUndefined()
  })
})
