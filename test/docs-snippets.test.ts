/**
 * Every TypeScript sample in `docs/*.md` and the README is a copy of a file under `docs/snippets/`, which the root
 * `tsconfig.json` type-checks. This test keeps the copies honest: each ```ts block must be byte-identical
 * to the snippet file named on the line before it, and every snippet file must be shown somewhere.
 */
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const docs = fileURLToPath(new URL("../docs", import.meta.url))
const snippets = join(docs, "snippets")

interface Block {
  readonly page: string
  readonly line: number
  readonly note: string
  readonly body: string
}

// The root README shows the first-pipeline sample too; its path is relative to `docs/`.
const readme = "../README.md"

const blocksOf = (page: string): ReadonlyArray<Block> => {
  const lines = readFileSync(join(docs, page), "utf8").split("\n")
  const blocks: Array<Block> = []
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== "```ts") continue
    let end = i + 1
    while (end < lines.length && lines[end] !== "```") end++
    let before = i - 1
    while (before >= 0 && lines[before]!.trim() === "") before--
    blocks.push({
      page,
      line: i + 1,
      note: before >= 0 ? lines[before]! : "",
      body: lines.slice(i + 1, end).join("\n") + "\n"
    })
    i = end
  }
  return blocks
}

const pages = [...readdirSync(docs).filter((name) => name.endsWith(".md")).sort(), readme]
const files = readdirSync(snippets).filter((name) => name.endsWith(".ts")).sort()
const blocks = pages.flatMap(blocksOf)

describe("docs snippets", () => {
  it("finds pages, snippets and samples", () => {
    expect(pages.length).toBeGreaterThan(0)
    expect(files.length).toBeGreaterThan(0)
    expect(blocks.length).toBeGreaterThanOrEqual(files.length)
  })

  it("has no TypeScript sample under another fence name", () => {
    for (const page of pages) {
      const fences = readFileSync(join(docs, page), "utf8").split("\n").filter((l) => /^```(typescript|tsx|js|javascript)\s*$/.test(l))
      expect(fences, page).toEqual([])
    }
  })

  for (const block of blocks) {
    it(`${block.page}:${block.line} is a checked snippet`, () => {
      const named = /snippets\/([A-Za-z0-9._-]+\.ts)/.exec(block.note)
      expect(named, `${block.page}:${block.line}: the line before the block must name docs/snippets/<file>.ts`).not.toBeNull()
      const file = named![1]!
      expect(files, `${block.page}:${block.line}: ${file} does not exist`).toContain(file)
      expect(block.body, `${block.page}:${block.line} differs from docs/snippets/${file}`).toBe(
        readFileSync(join(snippets, file), "utf8")
      )
    })
  }

  it("shows every snippet file in some page", () => {
    const shown = new Set(blocks.map((b) => /snippets\/([A-Za-z0-9._-]+\.ts)/.exec(b.note)?.[1]))
    expect(files.filter((file) => !shown.has(file))).toEqual([])
  })
})
