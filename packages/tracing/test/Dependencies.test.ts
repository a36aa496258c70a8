import { describe, expect, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))
const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  readonly dependencies?: Record<string, string>
  readonly peerDependencies?: Record<string, string>
}

describe("@bulwark/tracing is exporter wiring only", () => {
  it("depends on no Bulwark package but core, and on no gRPC, web or unused OTLP exporter", () => {
    const all = Object.keys({ ...manifest.dependencies, ...manifest.peerDependencies })
    expect(all.filter((name) => name.startsWith("@bulwark/"))).toEqual(["@bulwark/core"])
    expect(all.filter((name) => /grpc|web|exporter-trace|sdk-logs|otlp-transformer/.test(name))).toEqual([])
  })

  it("imports no other Bulwark package from its sources", () => {
    const sources = readdirSync(join(root, "src")).filter((name) => name.endsWith(".ts"))
    for (const file of sources) {
      // Comments left out (they name modules in prose); statements may span lines.
      const text = readFileSync(join(root, "src", file), "utf8").split("\n").filter((line) => !/^\s*(\/\/|\*|\/\*)/.test(line)).join("\n")
      const imported = [...text.matchAll(/\b(?:import|export)\b[^;]*?\bfrom "(@bulwark\/[^"/]+)/g)].map((m) => m[1])
      expect(imported.filter((name) => name !== "@bulwark/core"), file).toEqual([])
    }
  })
})
