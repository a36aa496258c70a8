/**
 * The metric names the runbook and the tracing page tell operators to page on are the names the packages
 * export: every `bulwark_*` metric-looking name in them is defined by a `Metric.counter/gauge/histogram` (or
 * its `MetricKey`) in some package's sources, and every metric the packages define is documented on the
 * tracing page.
 */
import { readdirSync, readFileSync, statSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const root = fileURLToPath(new URL("..", import.meta.url))

const sourcesOf = (dir: string): Array<string> =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? sourcesOf(path) : name.endsWith(".ts") ? [path] : []
  })

const defined = new Set(
  readdirSync(join(root, "packages")).flatMap((pkg) => {
    const src = join(root, "packages", pkg, "src")
    try {
      statSync(src)
    } catch {
      return []
    }
    return sourcesOf(src).flatMap((file) =>
      [...readFileSync(file, "utf8").matchAll(/Metric(?:Key)?\.(?:counter|gauge|histogram)\(\s*"(bulwark_[a-z_]+)"/g)].map((m) => m[1]!)
    )
  })
)

// Names shaped like metrics (SQL objects such as the `bulwark_outbox_sleepers` view are not).
const metricLike = /^bulwark_[a-z_]+(_total|_seconds|_ms|_state|_depth|_backlog|_up|_active|_queued)$/
const namesIn = (page: string) =>
  new Set([...readFileSync(join(root, "docs", page), "utf8").matchAll(/\bbulwark_[a-z_]+\b/g)].map((m) => m[0]).filter((n) => metricLike.test(n)))

describe("metric names in the docs", () => {
  it("finds the packages' metrics", () => {
    expect(defined.size).toBeGreaterThan(10)
  })

  for (const page of ["runbook.md", "tracing.md"]) {
    it(`every metric ${page} names is one a package exports`, () => {
      expect([...namesIn(page)].filter((name) => !defined.has(name))).toEqual([])
    })
  }

  it("no metric is named without its bulwark_ prefix", () => {
    for (const page of ["runbook.md", "tracing.md"]) {
      const bare = [...readFileSync(join(root, "docs", page), "utf8").matchAll(/`([a-z][a-z_]*_(?:total|seconds))\b/g)]
        .map((m) => m[1]!)
        .filter((name) => !name.startsWith("bulwark_"))
      expect(bare, page).toEqual([])
    }
  })

  it("every metric a package exports is in the tracing page's table", () => {
    const documented = namesIn("tracing.md")
    expect([...defined].filter((name) => !documented.has(name))).toEqual([])
  })
})
