import { describe, expect, it } from "@effect/vitest"
import { JSONSchema, Schema } from "effect"
import * as Compatibility from "../src/Compatibility.js"

type S = Compatibility.JsonSchema

/** A closed object (additionalProperties: false), as `JSONSchema.make` writes a Struct. */
const closed = (properties: Record<string, S>, required: ReadonlyArray<string> = Object.keys(properties), extra: Record<string, unknown> = {}): S =>
  ({ type: "object", properties, required, additionalProperties: false, ...extra })
/** An open object (additionalProperties absent). */
const open = (properties: Record<string, S>, required: ReadonlyArray<string> = Object.keys(properties), extra: Record<string, unknown> = {}): S =>
  ({ type: "object", properties, required, ...extra })

const str: S = { type: "string" }
const int: S = { type: "integer" }
const num: S = { type: "number" }

interface Case {
  readonly change: string
  readonly before: S
  readonly after: S
  /** The verdicts Confluent Schema Registry's JSON Schema rules give (BACKWARD: new reads old; FORWARD: old reads new). */
  readonly backward: boolean
  readonly forward: boolean
  /** The field the report must name when the change breaks. */
  readonly field?: string
}

// Each row is one schema change with the verdict per mode as Confluent documents it for JSON Schema
// (content models decide additions and removals; readers may widen, never narrow). FULL = BACKWARD ∧ FORWARD.
const cases: ReadonlyArray<Case> = [
  // properties and content models
  { change: "add an optional property to a closed model", before: closed({ a: str }), after: closed({ a: str, b: str }, ["a"]), backward: true, forward: false, field: "b" },
  { change: "add a typed property to an open model", before: open({ a: str }), after: open({ a: str, b: str }, ["a"]), backward: false, forward: true, field: "b" },
  { change: "add a property with an empty schema to an open model", before: open({ a: str }), after: open({ a: str, b: {} }, ["a"]), backward: true, forward: true },
  { change: "add a required property to a closed model", before: closed({ a: str }), after: closed({ a: str, b: str }), backward: false, forward: false, field: "b" },
  { change: "add a required property with a default to a closed model", before: closed({ a: str }), after: closed({ a: str, b: { type: "string", default: "x" } }), backward: true, forward: false, field: "b" },
  { change: "remove an optional property from a closed model", before: closed({ a: str, b: str }, ["a"]), after: closed({ a: str }), backward: false, forward: true, field: "b" },
  { change: "remove a property from an open model", before: open({ a: str, b: str }, ["a"]), after: open({ a: str }), backward: true, forward: false, field: "b" },
  { change: "remove a required property from a closed model", before: closed({ a: str, b: str }), after: closed({ a: str }), backward: false, forward: false, field: "b" },
  { change: "rename a required field in a closed model", before: closed({ amount: int }), after: closed({ amountCents: int }), backward: false, forward: false, field: "amount" },
  { change: "make a required property optional", before: closed({ a: str, b: str }), after: closed({ a: str, b: str }, ["a"]), backward: true, forward: false, field: "b" },
  { change: "make an optional property required", before: closed({ a: str, b: str }, ["a"]), after: closed({ a: str, b: str }), backward: false, forward: true, field: "b" },
  { change: "close an open model (additionalProperties: false)", before: open({ a: str }), after: closed({ a: str }), backward: false, forward: true, field: "(root)" },
  { change: "open a closed model", before: closed({ a: str }), after: open({ a: str }), backward: true, forward: false },
  { change: "partially open model: add a property its additionalProperties covers", before: closed({ a: str }, ["a"], { additionalProperties: str }), after: closed({ a: str, b: str }, ["a"], { additionalProperties: str }), backward: true, forward: true },
  { change: "partially open model: add a property its additionalProperties does not cover", before: closed({ a: str }, ["a"], { additionalProperties: str }), after: closed({ a: str, b: int }, ["a"], { additionalProperties: str }), backward: false, forward: false, field: "b" },
  { change: "constrain the additional properties of an open model", before: open({ a: str }), after: open({ a: str }, ["a"], { additionalProperties: str }), backward: false, forward: true },
  { change: "maxProperties added", before: open({ a: str }), after: open({ a: str }, ["a"], { maxProperties: 5 }), backward: false, forward: true },
  // types
  { change: "change a type (string → integer)", before: closed({ a: str }), after: closed({ a: int }), backward: false, forward: false, field: "a" },
  { change: "widen integer to number", before: closed({ a: int }), after: closed({ a: num }), backward: true, forward: false, field: "a" },
  { change: "narrow number to integer", before: closed({ a: num }), after: closed({ a: int }), backward: false, forward: true, field: "a" },
  { change: "change the items of an array", before: closed({ tags: { type: "array", items: str } }), after: closed({ tags: { type: "array", items: int } }), backward: false, forward: false, field: "tags[]" },
  { change: "change a nested field's type", before: closed({ data: closed({ object: closed({ id: str }) }) }), after: closed({ data: closed({ object: closed({ id: int }) }) }), backward: false, forward: false, field: "data.object.id" },
  // enums / literals
  { change: "add an enum value", before: closed({ s: { type: "string", enum: ["a", "b"] } }), after: closed({ s: { type: "string", enum: ["a", "b", "c"] } }), backward: true, forward: false, field: "s" },
  { change: "remove an enum value", before: closed({ s: { type: "string", enum: ["a", "b"] } }), after: closed({ s: { type: "string", enum: ["a"] } }), backward: false, forward: true, field: "s" },
  { change: "replace an enum value", before: closed({ s: { type: "string", enum: ["a", "b"] } }), after: closed({ s: { type: "string", enum: ["a", "c"] } }), backward: false, forward: false, field: "s" },
  // numeric ranges and other constraints
  { change: "maximum increased", before: closed({ n: { type: "integer", maximum: 10 } }), after: closed({ n: { type: "integer", maximum: 20 } }), backward: true, forward: false, field: "n" },
  { change: "maximum decreased", before: closed({ n: { type: "integer", maximum: 20 } }), after: closed({ n: { type: "integer", maximum: 10 } }), backward: false, forward: true, field: "n" },
  { change: "minimum added", before: closed({ n: int }), after: closed({ n: { type: "integer", minimum: 0 } }), backward: false, forward: true, field: "n" },
  { change: "minimum removed", before: closed({ n: { type: "integer", minimum: 0 } }), after: closed({ n: int }), backward: true, forward: false, field: "n" },
  { change: "exclusiveMinimum decreased", before: closed({ n: { type: "number", exclusiveMinimum: 5 } }), after: closed({ n: { type: "number", exclusiveMinimum: 0 } }), backward: true, forward: false, field: "n" },
  { change: "multipleOf reduced to a divisor", before: closed({ n: { type: "integer", multipleOf: 10 } }), after: closed({ n: { type: "integer", multipleOf: 5 } }), backward: true, forward: false, field: "n" },
  { change: "maxLength increased", before: closed({ s: { type: "string", maxLength: 5 } }), after: closed({ s: { type: "string", maxLength: 10 } }), backward: true, forward: false, field: "s" },
  { change: "minLength increased", before: closed({ s: { type: "string", minLength: 1 } }), after: closed({ s: { type: "string", minLength: 3 } }), backward: false, forward: true, field: "s" },
  { change: "pattern added", before: closed({ s: str }), after: closed({ s: { type: "string", pattern: "^[a-z]+$" } }), backward: false, forward: true, field: "s" },
  { change: "pattern changed", before: closed({ s: { type: "string", pattern: "^a" } }), after: closed({ s: { type: "string", pattern: "^b" } }), backward: false, forward: false, field: "s" },
  { change: "maxItems increased", before: closed({ l: { type: "array", items: str, maxItems: 2 } }), after: closed({ l: { type: "array", items: str, maxItems: 3 } }), backward: true, forward: false, field: "l" },
  { change: "uniqueItems added", before: closed({ l: { type: "array", items: str } }), after: closed({ l: { type: "array", items: str, uniqueItems: true } }), backward: false, forward: true, field: "l" },
  // unions
  { change: "make a string nullable (string → string | null)", before: closed({ s: str }), after: closed({ s: { anyOf: [str, { type: "null" }] } }), backward: true, forward: false, field: "s" },
  { change: "add a union branch", before: closed({ v: { anyOf: [str, int] } }), after: closed({ v: { anyOf: [str, int, { type: "boolean" }] } }), backward: true, forward: false, field: "v" },
  { change: "remove a union branch", before: closed({ v: { anyOf: [str, int, { type: "boolean" }] } }), after: closed({ v: { anyOf: [str, int] } }), backward: false, forward: true, field: "v" },
  // annotations only
  { change: "description and title changed", before: closed({ a: { type: "string", description: "x" } }), after: closed({ a: { type: "string", description: "y", title: "A" } }), backward: true, forward: true },
  { change: "default changed", before: closed({ a: { type: "string", default: "x" } }), after: closed({ a: { type: "string", default: "y" } }), backward: true, forward: true }
]

describe("Compatibility: schema changes judged per mode (Confluent's JSON Schema rules)", () => {
  it("covers at least 30 changes", () => {
    expect(cases.length).toBeGreaterThanOrEqual(30)
  })

  for (const c of cases) {
    it(c.change, () => {
      const verdict = (mode: Compatibility.Mode) => Compatibility.isCompatible(mode, c.before, c.after)
      expect({
        BACKWARD: verdict("BACKWARD"),
        FORWARD: verdict("FORWARD"),
        FULL: verdict("FULL"),
        NONE: verdict("NONE")
      }).toEqual({ BACKWARD: c.backward, FORWARD: c.forward, FULL: c.backward && c.forward, NONE: true })
      if (c.field !== undefined) {
        // The breaking direction names the field.
        const changes = c.backward ? Compatibility.readable(c.after, c.before) : Compatibility.readable(c.before, c.after)
        const broken = changes.filter((x) => !x.compatible)
        if (!(c.backward && c.forward)) expect(broken.map((x) => x.field)).toContain(c.field)
        for (const x of broken) expect(Compatibility.fixHint(x)).not.toBe("")
      }
    })
  }
})

describe("Compatibility: transitive modes", () => {
  // v2 changed `a`'s type (registered under NONE once); v3 adds an optional field.
  const v1 = closed({ a: str })
  const v2 = closed({ a: int })
  const v3 = closed({ a: int, b: str }, ["a"])
  const history = [{ version: 1, schema: v1 }, { version: 2, schema: v2 }]

  it("BACKWARD compares with the latest version only", () => {
    expect(Compatibility.checkVersion("BACKWARD", history, { version: 3, schema: v3 })).toEqual([])
  })

  it("BACKWARD_TRANSITIVE compares with every earlier version and names the version and field", () => {
    const conflicts = Compatibility.checkVersion("BACKWARD_TRANSITIVE", history, { version: 3, schema: v3 })
    expect(conflicts.map((c) => [c.direction, c.against, c.changes.map((x) => x.field)])).toEqual([["backward", 1, ["a"]]])
  })

  it("FORWARD_TRANSITIVE and FULL_TRANSITIVE check the other direction too", () => {
    expect(Compatibility.checkVersion("FORWARD", history, { version: 3, schema: v3 }).map((c) => c.direction)).toEqual(["forward"])
    const full = Compatibility.checkVersion("FULL_TRANSITIVE", history, { version: 3, schema: v3 })
    expect(full.map((c) => `${c.direction}@${c.against}`)).toEqual(["backward@1", "forward@1", "forward@2"])
  })
})

describe("Compatibility: documents written by JSONSchema.make", () => {
  const js = (schema: Schema.Schema<any, any, never>) => JSONSchema.make(schema, { target: "jsonSchema2020-12" }) as unknown as S
  const V1 = Schema.Struct({ id: Schema.NonEmptyString, amount: Schema.Int.pipe(Schema.positive()), kind: Schema.Literal("a", "b") })

  it("resolves $defs references (with sibling constraints) and judges effect/Schema changes", () => {
    const added = Schema.Struct({ ...V1.fields, note: Schema.optional(Schema.String) })
    expect(Compatibility.isCompatible("BACKWARD", js(V1), js(added))).toBe(true)
    const renamed = Schema.Struct({ id: Schema.NonEmptyString, amountCents: Schema.Int, kind: Schema.Literal("a", "b") })
    expect(Compatibility.readable(js(V1), js(renamed)).filter((c) => !c.compatible).map((c) => c.field)).toEqual(["amountCents", "amount"].sort())
    const literal = Schema.Struct({ ...V1.fields, kind: Schema.Literal("a", "b", "c") })
    expect(Compatibility.isCompatible("BACKWARD", js(V1), js(literal))).toBe(true)
    expect(Compatibility.isCompatible("FORWARD", js(V1), js(literal))).toBe(false)
    const relaxed = Schema.Struct({ ...V1.fields, amount: Schema.Int })
    expect(Compatibility.isCompatible("BACKWARD", js(V1), js(relaxed))).toBe(true)
    expect(Compatibility.isCompatible("FORWARD", js(V1), js(relaxed))).toBe(false)
  })

  it("ends on recursive schemas", () => {
    interface Tree { readonly value: number; readonly children: ReadonlyArray<Tree> }
    const Tree = Schema.Struct({ value: Schema.Number, children: Schema.Array(Schema.suspend((): Schema.Schema<Tree> => Tree)) }).annotations({ identifier: "Tree" })
    expect(Compatibility.isCompatible("FULL", js(Tree), js(Tree))).toBe(true)
  })

  it("reports a keyword it does not model as breaking rather than passing it", () => {
    const changes = Compatibility.readable(closed({ a: str }), closed({ a: { type: "string", contains: {} } }))
    expect(changes.some((c) => c.kind === "unsupported-change" && !c.compatible)).toBe(true)
  })

  it("a reader that ignores undeclared properties reads a writer that added one", () => {
    const reader = Compatibility.ignoringExcessProperties(closed({ a: str }))
    expect(Compatibility.canRead(closed({ a: str, b: str }), reader)).toBe(true)
    expect(Compatibility.canRead(closed({ a: str, b: str }), closed({ a: str }))).toBe(false)
  })
})
