/**
 * Schema-registry style compatibility of JSON Schema documents (the 2020-12 documents `JSONSchema.make`
 * writes), with the verdicts Confluent Schema Registry documents for JSON Schema:
 *
 * - the question is always "can a reader with schema R read every document valid under writer schema W?";
 * - objects follow their *content model*: open (`additionalProperties` absent or true), closed
 *   (`additionalProperties: false`) or partially open (`additionalProperties` a schema, or `patternProperties`).
 *   Adding a property is safe only to a closed model (old data cannot carry it), removing one only from an
 *   open model (the reader then accepts whatever is there);
 * - a reader may widen (a larger maximum, a smaller minimum, a removed pattern, more enum values, more union
 *   branches, integer → number) but not narrow.
 *
 * BACKWARD: the new schema reads data written with the old one; FORWARD: the old schema reads data written
 * with the new one; FULL: both; `*_TRANSITIVE`: against every earlier version rather than the latest.
 *
 * Where Confluent is silent or conservative this module judges by what the reader accepts (a union narrowed
 * to a single branch that reads every branch the writer had is compatible); any keyword it does not model
 * that differs is reported as an incompatible change rather than ignored.
 */

/** A JSON Schema document or subschema. */
export type JsonSchema = boolean | { readonly [keyword: string]: unknown }

/** The compatibility modes of a schema registry. */
export const modes = [
  "BACKWARD",
  "BACKWARD_TRANSITIVE",
  "FORWARD",
  "FORWARD_TRANSITIVE",
  "FULL",
  "FULL_TRANSITIVE",
  "NONE"
] as const

/** A compatibility mode. */
export type Mode = typeof modes[number]

/** Whether `u` names a compatibility mode. */
export const isMode = (u: unknown): u is Mode => typeof u === "string" && (modes as ReadonlyArray<string>).includes(u)

/** What changed between a writer's schema and a reader's, at one place. */
export type ChangeKind =
  | "type-changed"
  | "type-widened"
  | "type-narrowed"
  | "property-added-to-open-model"
  | "empty-property-added-to-open-model"
  | "optional-property-added-to-closed-model"
  | "required-property-added-to-closed-model"
  | "required-property-with-default-added"
  | "property-added-covered-by-partial-model"
  | "property-added-not-covered-by-partial-model"
  | "property-removed-from-open-model"
  | "property-removed-from-closed-model"
  | "property-removed-covered-by-partial-model"
  | "property-removed-not-covered-by-partial-model"
  | "false-property-removed"
  | "property-made-required"
  | "property-made-required-with-default"
  | "property-made-optional"
  | "additional-properties-allowed"
  | "additional-properties-forbidden"
  | "additional-properties-narrowed"
  | "additional-properties-widened"
  | "enum-extended"
  | "enum-narrowed"
  | "enum-added"
  | "enum-removed"
  | "union-extended"
  | "union-narrowed"
  | "bound-relaxed"
  | "bound-tightened"
  | "pattern-added"
  | "pattern-changed"
  | "pattern-removed"
  | "unique-items-added"
  | "unique-items-removed"
  | "tuple-changed"
  | "unsupported-change"

/** One change from writer to reader. */
export interface Change {
  readonly kind: ChangeKind
  /** JSON pointer of the place in the reader's schema (`#/properties/amount`). */
  readonly pointer: string
  /** The field in the data (`amount`, `data.object.id`, `items[]`), `(root)` for the document itself. */
  readonly field: string
  /** Whether the reader still reads every document the writer can write. */
  readonly compatible: boolean
  /** What changed, in words. */
  readonly message: string
}

type Obj = { readonly [keyword: string]: unknown }

interface Context {
  readonly writerRoot: JsonSchema
  readonly readerRoot: JsonSchema
  readonly changes: Array<Change>
  /** `$ref` pairs being compared, so recursive schemas end. */
  readonly visiting: Set<string>
}

const isObj = (u: unknown): u is Obj => typeof u === "object" && u !== null && !Array.isArray(u)

const resolvePointer = (root: JsonSchema, ref: string): JsonSchema | undefined => {
  if (!ref.startsWith("#")) return undefined
  let node: unknown = root
  for (const raw of ref.slice(1).split("/").filter((s) => s !== "")) {
    const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~")
    if (!isObj(node)) return undefined
    node = node[key]
  }
  return typeof node === "boolean" || isObj(node) ? node : undefined
}

// Annotations never change what validates.
const annotations = new Set(["$schema", "$id", "$comment", "$defs", "definitions", "title", "description", "examples", "default", "deprecated", "readOnly", "writeOnly", "format", "contentMediaType", "contentEncoding"])

/** A `$ref` with siblings is the referenced schema with the siblings' constraints added (2020-12 semantics). */
const resolve = (root: JsonSchema, schema: JsonSchema, seen: Set<string> = new Set()): JsonSchema => {
  if (!isObj(schema) || typeof schema.$ref !== "string") return schema
  const ref = schema.$ref
  if (seen.has(ref)) return schema
  seen.add(ref)
  const target = resolvePointer(root, ref)
  if (target === undefined) return schema
  const { $ref: _ref, ...rest } = schema
  const resolved = resolve(root, target, seen)
  if (resolved === false) return false
  return { ...(resolved === true ? {} : resolved), ...rest }
}

type Kind = "any" | "none" | "enum" | "sum" | "product" | "object" | "array" | "string" | "number" | "boolean" | "null" | "unknown"

const kindOf = (s: JsonSchema): Kind => {
  if (s === true) return "any"
  if (s === false) return "none"
  if ("enum" in s || "const" in s) return "enum"
  if (Array.isArray(s.anyOf) || Array.isArray(s.oneOf)) return "sum"
  if (Array.isArray(s.allOf)) return "product"
  const type = s.type
  if (Array.isArray(type)) return type.length === 1 ? kindOfType(type[0]) : "sum"
  if (type === undefined) {
    if ("properties" in s || "additionalProperties" in s || "required" in s || "patternProperties" in s) return "object"
    if ("items" in s || "prefixItems" in s) return "array"
    const constraints = Object.keys(s).filter((k) => !annotations.has(k))
    return constraints.length === 0 ? "any" : "unknown"
  }
  return kindOfType(type)
}

const kindOfType = (type: unknown): Kind => {
  switch (type) {
    case "object":
      return "object"
    case "array":
      return "array"
    case "string":
      return "string"
    case "number":
    case "integer":
      return "number"
    case "boolean":
      return "boolean"
    case "null":
      return "null"
    default:
      return "unknown"
  }
}

const branchesOf = (s: Obj): ReadonlyArray<JsonSchema> => {
  if (Array.isArray(s.anyOf)) return s.anyOf as ReadonlyArray<JsonSchema>
  if (Array.isArray(s.oneOf)) return s.oneOf as ReadonlyArray<JsonSchema>
  const { type, ...rest } = s
  return (type as ReadonlyArray<string>).map((t) => ({ ...rest, type: t }))
}

const typeName = (s: JsonSchema): string => {
  if (s === true) return "anything"
  if (s === false) return "nothing"
  if ("const" in s) return `the constant ${JSON.stringify(s.const)}`
  if (Array.isArray(s.enum)) return `one of ${s.enum.map((v) => JSON.stringify(v)).join(", ")}`
  if (Array.isArray(s.anyOf) || Array.isArray(s.oneOf)) return `a union of ${branchesOf(s).length}`
  if (typeof s.type === "string") return s.type
  if (Array.isArray(s.type)) return s.type.join(" | ")
  return kindOf(s)
}

const fieldOf = (field: string) => field === "" ? "(root)" : field

const add = (ctx: Context, pointer: string, field: string, kind: ChangeKind, compatible: boolean, message: string) => {
  ctx.changes.push({ kind, pointer, field: fieldOf(field), compatible, message })
}

const sub = (ctx: Context): Context => ({ ...ctx, changes: [] })
const allCompatible = (changes: ReadonlyArray<Change>) => changes.every((c) => c.compatible)

const join = (field: string, name: string) => field === "" ? name : `${field}.${name}`

/** Compares writer `w` with reader `r` at `pointer` / `field`, appending the changes to `ctx`. */
const compare = (ctx: Context, w0: JsonSchema, r0: JsonSchema, pointer: string, field: string): void => {
  const w = resolve(ctx.writerRoot, w0)
  const r = resolve(ctx.readerRoot, r0)
  // A recursive schema compared with itself ends here: the pair is already being compared further up.
  if (isObj(w0) && isObj(r0) && typeof w0.$ref === "string" && typeof r0.$ref === "string") {
    const key = `${w0.$ref}|${r0.$ref}`
    if (ctx.visiting.has(key)) return
    ctx.visiting.add(key)
    try {
      compareResolved(ctx, w, r, pointer, field)
    } finally {
      ctx.visiting.delete(key)
    }
    return
  }
  compareResolved(ctx, w, r, pointer, field)
}

const compareResolved = (ctx: Context, w: JsonSchema, r: JsonSchema, pointer: string, field: string): void => {
  const wk = kindOf(w)
  const rk = kindOf(r)
  if (rk === "any" || wk === "none") return
  if (rk === "none") {
    add(ctx, pointer, field, "type-changed", false, `the reader accepts nothing at ${fieldOf(field)}`)
    return
  }
  if (wk !== "sum" && rk === "sum") {
    const branches = branchesOf(r as Obj)
    for (const [i, branch] of branches.entries()) {
      const trial = sub(ctx)
      compare(trial, w, branch, `${pointer}/anyOf/${i}`, field)
      if (allCompatible(trial.changes)) {
        ctx.changes.push(...trial.changes)
        if (branches.length > 1) {
          add(ctx, pointer, field, "union-extended", true, `${fieldOf(field)} became a union that still accepts ${typeName(w)}`)
        }
        return
      }
    }
    add(ctx, pointer, field, "type-changed", false, `${fieldOf(field)} changed from ${typeName(w)} to ${typeName(r)}`)
    return
  }
  if (wk === "sum" && rk !== "sum") {
    const branches = branchesOf(w as Obj)
    const trials = branches.map((branch, i) => {
      const trial = sub(ctx)
      compare(trial, branch, r, `${pointer}`, field)
      return { i, trial }
    })
    if (trials.every(({ trial }) => allCompatible(trial.changes))) {
      for (const { trial } of trials) ctx.changes.push(...trial.changes)
      return
    }
    add(ctx, pointer, field, branches.length > 1 ? "union-narrowed" : "type-changed", false,
      `${fieldOf(field)} changed from ${typeName(w)} to ${typeName(r)}: the writer can write what the reader refuses`)
    return
  }
  if (wk === "enum" && rk !== "enum") {
    // Every value the writer may write must be of the reader's type.
    const values = valuesOf(w as Obj)
    const bad = values.filter((v) => !valueFits(v, r))
    if (bad.length === 0) {
      add(ctx, pointer, field, "enum-removed", true, `${fieldOf(field)} no longer restricts its values`)
    } else {
      add(ctx, pointer, field, "type-changed", false, `${fieldOf(field)}: the writer may write ${bad.map((v) => JSON.stringify(v)).join(", ")}, which the reader's ${typeName(r)} refuses`)
    }
    return
  }
  if (wk !== "enum" && rk === "enum") {
    add(ctx, pointer, field, "enum-added", false, `${fieldOf(field)} is now restricted to ${typeName(r)}`)
    return
  }
  if (wk !== rk) {
    add(ctx, pointer, field, "type-changed", false, `${fieldOf(field)} changed from ${typeName(w)} to ${typeName(r)}`)
    return
  }
  const wo = w as Obj
  const ro = r as Obj
  switch (wk) {
    case "enum":
      return compareEnum(ctx, wo, ro, pointer, field)
    case "sum":
      return compareSum(ctx, wo, ro, pointer, field)
    case "product":
      return compareProduct(ctx, wo, ro, pointer, field)
    case "object":
      return compareObject(ctx, wo, ro, pointer, field)
    case "array":
      return compareArray(ctx, wo, ro, pointer, field)
    case "string":
      compareBound(ctx, wo, ro, pointer, field, "maxLength", "max")
      compareBound(ctx, wo, ro, pointer, field, "minLength", "min")
      comparePattern(ctx, wo, ro, pointer, field)
      return compareUnmodelled(ctx, wo, ro, pointer, field, stringKeywords)
    case "number":
      if (wo.type === "number" && ro.type === "integer") {
        add(ctx, pointer, field, "type-narrowed", false, `${fieldOf(field)} changed from number to integer`)
      } else if (wo.type === "integer" && ro.type === "number") {
        add(ctx, pointer, field, "type-widened", true, `${fieldOf(field)} changed from integer to number`)
      }
      compareBound(ctx, wo, ro, pointer, field, "maximum", "max")
      compareBound(ctx, wo, ro, pointer, field, "exclusiveMaximum", "max")
      compareBound(ctx, wo, ro, pointer, field, "minimum", "min")
      compareBound(ctx, wo, ro, pointer, field, "exclusiveMinimum", "min")
      compareMultipleOf(ctx, wo, ro, pointer, field)
      return compareUnmodelled(ctx, wo, ro, pointer, field, numberKeywords)
    case "boolean":
    case "null":
      return compareUnmodelled(ctx, wo, ro, pointer, field, new Set(["type"]))
    default:
      if (JSON.stringify(strip(wo)) !== JSON.stringify(strip(ro))) {
        add(ctx, pointer, field, "unsupported-change", false, `${fieldOf(field)} changed in a way this checker does not model`)
      }
  }
}

const stringKeywords = new Set(["type", "maxLength", "minLength", "pattern"])
const numberKeywords = new Set(["type", "maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum", "multipleOf"])

const strip = (s: Obj): Obj => Object.fromEntries(Object.entries(s).filter(([k]) => !annotations.has(k)).sort(([a], [b]) => a.localeCompare(b)))

/** Keywords outside `modelled` that differ are reported: a change not understood is never passed as safe. */
const compareUnmodelled = (ctx: Context, w: Obj, r: Obj, pointer: string, field: string, modelled: ReadonlySet<string>) => {
  const keys = new Set([...Object.keys(w), ...Object.keys(r)])
  for (const key of keys) {
    if (modelled.has(key) || annotations.has(key)) continue
    if (JSON.stringify(w[key]) !== JSON.stringify(r[key])) {
      add(ctx, `${pointer}/${key}`, field, "unsupported-change", false, `${fieldOf(field)}: "${key}" changed, which this checker does not model`)
    }
  }
}

const valuesOf = (s: Obj): ReadonlyArray<unknown> => "const" in s ? [s.const] : (s.enum as ReadonlyArray<unknown>)

const jsonType = (v: unknown): string =>
  v === null ? "null" : Array.isArray(v) ? "array" : typeof v === "number" ? (Number.isInteger(v) ? "integer" : "number") : typeof v

const valueFits = (v: unknown, r: JsonSchema): boolean => {
  if (r === true) return true
  if (r === false) return false
  const types = Array.isArray(r.type) ? r.type as ReadonlyArray<string> : typeof r.type === "string" ? [r.type] : undefined
  if (types === undefined) return Array.isArray(r.anyOf) || Array.isArray(r.oneOf) ? branchesOf(r).some((b) => valueFits(v, b)) : true
  const t = jsonType(v)
  return types.includes(t) || (t === "integer" && types.includes("number"))
}

const sameValue = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)

const compareEnum = (ctx: Context, w: Obj, r: Obj, pointer: string, field: string) => {
  const wv = valuesOf(w)
  const rv = valuesOf(r)
  const missing = wv.filter((v) => !rv.some((x) => sameValue(v, x)))
  if (missing.length > 0) {
    add(ctx, pointer, field, "enum-narrowed", false, `${fieldOf(field)} no longer accepts ${missing.map((v) => JSON.stringify(v)).join(", ")}`)
  } else if (rv.length > wv.length) {
    const added = rv.filter((v) => !wv.some((x) => sameValue(v, x)))
    add(ctx, pointer, field, "enum-extended", true, `${fieldOf(field)} also accepts ${added.map((v) => JSON.stringify(v)).join(", ")}`)
  }
}

const compareSum = (ctx: Context, w: Obj, r: Obj, pointer: string, field: string) => {
  const wb = branchesOf(w)
  const rb = branchesOf(r)
  const unmatched: Array<number> = []
  for (const [i, branch] of wb.entries()) {
    let matched: Context | undefined
    for (const [j, candidate] of rb.entries()) {
      const trial = sub(ctx)
      compare(trial, branch, candidate, `${pointer}/anyOf/${j}`, field)
      if (allCompatible(trial.changes)) {
        matched = trial
        break
      }
    }
    if (matched === undefined) unmatched.push(i)
    else ctx.changes.push(...matched.changes)
  }
  if (unmatched.length > 0) {
    add(ctx, pointer, field, "union-narrowed", false,
      `${fieldOf(field)}: the reader's union no longer accepts ${unmatched.map((i) => typeName(resolve(ctx.writerRoot, wb[i]!))).join(", ")}`)
  } else if (rb.length > wb.length) {
    add(ctx, pointer, field, "union-extended", true, `${fieldOf(field)}: the union gained ${rb.length - wb.length} branch(es)`)
  }
}

const compareProduct = (ctx: Context, w: Obj, r: Obj, pointer: string, field: string) => {
  const wb = w.allOf as ReadonlyArray<JsonSchema>
  const rb = r.allOf as ReadonlyArray<JsonSchema>
  if (wb.length !== rb.length) {
    // A reader with fewer conjuncts accepts more; one with more conjuncts may refuse what the writer writes.
    if (rb.length < wb.length && rb.every((b) => wb.some((x) => sameValue(x, b)))) {
      add(ctx, pointer, field, "bound-relaxed", true, `${fieldOf(field)}: allOf lost ${wb.length - rb.length} condition(s)`)
    } else {
      add(ctx, pointer, field, "unsupported-change", false, `${fieldOf(field)}: allOf changed from ${wb.length} to ${rb.length} conditions`)
    }
    return
  }
  wb.forEach((b, i) => compare(ctx, b, rb[i]!, `${pointer}/allOf/${i}`, field))
}

type ContentModel = "open" | "closed" | "partial"

const contentModel = (s: Obj): ContentModel => {
  const patterns = isObj(s.patternProperties) && Object.keys(s.patternProperties).length > 0
  const additional = s.additionalProperties
  if (!patterns && (additional === undefined || additional === true || (isObj(additional) && Object.keys(strip(additional)).length === 0))) {
    return "open"
  }
  if (!patterns && additional === false) return "closed"
  return "partial"
}

/** The schema a partially open model gives an undeclared property `name`, if any. */
const partialSchemaFor = (s: Obj, name: string): JsonSchema | undefined => {
  if (isObj(s.patternProperties)) {
    for (const [pattern, schema] of Object.entries(s.patternProperties)) {
      try {
        if (new RegExp(pattern, "u").test(name)) return schema as JsonSchema
      } catch {
        continue
      }
    }
  }
  const additional = s.additionalProperties
  return isObj(additional) || additional === true ? additional as JsonSchema : undefined
}

const propsOf = (s: Obj): Obj => isObj(s.properties) ? s.properties : {}
const requiredOf = (s: Obj): ReadonlySet<string> => new Set(Array.isArray(s.required) ? s.required as ReadonlyArray<string> : [])
const hasDefault = (root: JsonSchema, s: unknown): boolean => {
  if (!isObj(s)) return false
  const resolved = resolve(root, s)
  return "default" in s || (isObj(resolved) && "default" in resolved)
}
const isEmptySchema = (root: JsonSchema, s: unknown): boolean => {
  if (s === true) return true
  if (!isObj(s)) return false
  return kindOf(resolve(root, s)) === "any"
}

const compareObject = (ctx: Context, w: Obj, r: Obj, pointer: string, field: string) => {
  const wp = propsOf(w)
  const rp = propsOf(r)
  const wr = requiredOf(w)
  const rr = requiredOf(r)
  const wModel = contentModel(w)
  const rModel = contentModel(r)
  const names = [...new Set([...Object.keys(wp), ...Object.keys(rp)])].sort()
  for (const name of names) {
    const at = `${pointer}/properties/${name.replace(/~/g, "~0").replace(/\//g, "~1")}`
    const f = join(field, name)
    const ws = wp[name] as JsonSchema | undefined
    const rs = rp[name] as JsonSchema | undefined
    if (rs === undefined) {
      // Removed from the reader: only its content model says what it does with the writer's value.
      if (rModel === "open") {
        add(ctx, at, f, "property-removed-from-open-model", true, `"${f}" is no longer declared; the reader's open model accepts it`)
      } else {
        const partial = partialSchemaFor(r, name)
        if (partial !== undefined) {
          const trial = sub(ctx)
          compare(trial, ws!, partial, at, f)
          ctx.changes.push(...trial.changes)
          const ok = allCompatible(trial.changes)
          add(ctx, at, f, ok ? "property-removed-covered-by-partial-model" : "property-removed-not-covered-by-partial-model", ok,
            ok ? `"${f}" is no longer declared; the reader's additional/pattern properties accept it` : `"${f}" was removed and the reader's additional/pattern properties refuse what the writer writes there`)
        } else if (ws === false) {
          add(ctx, at, f, "false-property-removed", true, `"${f}" (never allowed) is no longer declared`)
        } else {
          add(ctx, at, f, "property-removed-from-closed-model", false, `"${f}" is written by the writer but the reader's closed model (additionalProperties: false) no longer allows it`)
        }
      }
      continue
    }
    if (ws === undefined) {
      // Added in the reader: only the writer's content model says what old data may hold under the name.
      if (wModel === "open") {
        if (isEmptySchema(ctx.readerRoot, rs)) {
          add(ctx, at, f, "empty-property-added-to-open-model", true, `"${f}" was declared with an empty schema`)
        } else {
          add(ctx, at, f, "property-added-to-open-model", false, `"${f}" was added, but the writer's open model may already write "${f}" with any value`)
        }
        continue
      }
      if (wModel === "partial") {
        const partial = partialSchemaFor(w, name)
        if (partial !== undefined) {
          const trial = sub(ctx)
          compare(trial, partial, rs, at, f)
          ctx.changes.push(...trial.changes)
          const ok = allCompatible(trial.changes)
          add(ctx, at, f, ok ? "property-added-covered-by-partial-model" : "property-added-not-covered-by-partial-model", ok,
            ok ? `"${f}" was added and accepts what the writer's additional/pattern properties allow` : `"${f}" was added but refuses what the writer's additional/pattern properties allow there`)
        }
      }
      if (rr.has(name)) {
        if (hasDefault(ctx.readerRoot, rs)) {
          add(ctx, at, f, "required-property-with-default-added", true, `"${f}" was added as required with a default`)
        } else {
          add(ctx, at, f, "required-property-added-to-closed-model", false, `the reader requires "${f}", which the writer does not write`)
        }
      } else {
        add(ctx, at, f, "optional-property-added-to-closed-model", true, `"${f}" was added as optional`)
      }
      continue
    }
    if (wr.has(name) && !rr.has(name)) {
      add(ctx, at, f, "property-made-optional", true, `"${f}" became optional for the reader`)
    } else if (!wr.has(name) && rr.has(name)) {
      if (hasDefault(ctx.readerRoot, rs)) {
        add(ctx, at, f, "property-made-required-with-default", true, `"${f}" became required, with a default`)
      } else {
        add(ctx, at, f, "property-made-required", false, `the reader requires "${f}", which the writer may leave out`)
      }
    }
    compare(ctx, ws, rs, at, f)
  }
  // Required names without a property schema (rare): a name required by the reader only.
  for (const name of rr) {
    if (name in rp || name in wp || wr.has(name)) continue
    add(ctx, `${pointer}/required`, join(field, name), "property-made-required", false, `the reader requires "${join(field, name)}", which the writer may leave out`)
  }
  compareAdditional(ctx, w, r, pointer, field)
  compareBound(ctx, w, r, pointer, field, "maxProperties", "max")
  compareBound(ctx, w, r, pointer, field, "minProperties", "min")
  compareUnmodelled(ctx, w, r, pointer, field, objectKeywords)
}

const objectKeywords = new Set(["type", "properties", "required", "additionalProperties", "patternProperties", "maxProperties", "minProperties"])

const compareAdditional = (ctx: Context, w: Obj, r: Obj, pointer: string, field: string) => {
  const at = `${pointer}/additionalProperties`
  const permits = (s: Obj) => s.additionalProperties !== false
  const schemaOf = (s: Obj) => isObj(s.additionalProperties) && Object.keys(strip(s.additionalProperties)).length > 0 ? s.additionalProperties : undefined
  if (permits(w) !== permits(r)) {
    if (permits(r)) add(ctx, at, field, "additional-properties-allowed", true, `${fieldOf(field)} now accepts undeclared properties`)
    else add(ctx, at, field, "additional-properties-forbidden", false, `${fieldOf(field)} no longer accepts undeclared properties (additionalProperties: false)`)
    return
  }
  const ws = schemaOf(w)
  const rs = schemaOf(r)
  if (ws === undefined && rs !== undefined) {
    add(ctx, at, field, "additional-properties-narrowed", false, `${fieldOf(field)}: undeclared properties must now match a schema`)
  } else if (ws !== undefined && rs === undefined) {
    add(ctx, at, field, "additional-properties-widened", true, `${fieldOf(field)}: undeclared properties may now hold anything`)
  } else if (ws !== undefined && rs !== undefined) {
    compare(ctx, ws, rs, at, field)
  }
  if (JSON.stringify(w.patternProperties ?? {}) !== JSON.stringify(r.patternProperties ?? {})) {
    const wpp = isObj(w.patternProperties) ? w.patternProperties : {}
    const rpp = isObj(r.patternProperties) ? r.patternProperties : {}
    for (const pattern of new Set([...Object.keys(wpp), ...Object.keys(rpp)])) {
      const a = wpp[pattern] as JsonSchema | undefined
      const b = rpp[pattern] as JsonSchema | undefined
      if (a !== undefined && b !== undefined) compare(ctx, a, b, `${pointer}/patternProperties/${pattern}`, field)
      else if (b === undefined) add(ctx, `${pointer}/patternProperties`, field, "additional-properties-widened", true, `${fieldOf(field)}: pattern ${pattern} no longer constrains properties`)
      else add(ctx, `${pointer}/patternProperties`, field, "additional-properties-narrowed", false, `${fieldOf(field)}: properties matching ${pattern} must now match a schema`)
    }
  }
}

const compareArray = (ctx: Context, w: Obj, r: Obj, pointer: string, field: string) => {
  const wp = Array.isArray(w.prefixItems) ? w.prefixItems as ReadonlyArray<JsonSchema> : []
  const rp = Array.isArray(r.prefixItems) ? r.prefixItems as ReadonlyArray<JsonSchema> : []
  const restOf = (s: Obj): JsonSchema => s.items === undefined ? true : s.items as JsonSchema
  const length = Math.max(wp.length, rp.length)
  for (let i = 0; i < length; i++) {
    // A position beyond a tuple's prefix is governed by its `items`.
    compare(ctx, wp[i] ?? restOf(w), rp[i] ?? restOf(r), `${pointer}/prefixItems/${i}`, `${field}[${i}]`)
  }
  if (w.items !== undefined || r.items !== undefined) compare(ctx, restOf(w), restOf(r), `${pointer}/items`, `${field}[]`)
  compareBound(ctx, w, r, pointer, field, "maxItems", "max")
  compareBound(ctx, w, r, pointer, field, "minItems", "min")
  if (w.uniqueItems !== true && r.uniqueItems === true) {
    add(ctx, `${pointer}/uniqueItems`, field, "unique-items-added", false, `${fieldOf(field)} must now hold unique items`)
  } else if (w.uniqueItems === true && r.uniqueItems !== true) {
    add(ctx, `${pointer}/uniqueItems`, field, "unique-items-removed", true, `${fieldOf(field)} may now repeat items`)
  }
  compareUnmodelled(ctx, w, r, pointer, field, arrayKeywords)
}

const arrayKeywords = new Set(["type", "items", "prefixItems", "maxItems", "minItems", "uniqueItems"])

/** An upper (`max`) or lower (`min`) bound: the reader may relax it, never tighten or add it. */
const compareBound = (ctx: Context, w: Obj, r: Obj, pointer: string, field: string, keyword: string, side: "max" | "min") => {
  const a = typeof w[keyword] === "number" ? w[keyword] as number : undefined
  const b = typeof r[keyword] === "number" ? r[keyword] as number : undefined
  if (a === b) return
  const at = `${pointer}/${keyword}`
  const label = `${fieldOf(field)}: ${keyword}`
  if (b === undefined) return add(ctx, at, field, "bound-relaxed", true, `${label} ${a} removed`)
  if (a === undefined) return add(ctx, at, field, "bound-tightened", false, `${label} ${b} added`)
  const relaxed = side === "max" ? b > a : b < a
  add(ctx, at, field, relaxed ? "bound-relaxed" : "bound-tightened", relaxed, `${label} changed from ${a} to ${b}`)
}

const compareMultipleOf = (ctx: Context, w: Obj, r: Obj, pointer: string, field: string) => {
  const a = typeof w.multipleOf === "number" ? w.multipleOf : undefined
  const b = typeof r.multipleOf === "number" ? r.multipleOf : undefined
  if (a === b) return
  const at = `${pointer}/multipleOf`
  if (b === undefined) return add(ctx, at, field, "bound-relaxed", true, `${fieldOf(field)}: multipleOf ${a} removed`)
  if (a === undefined) return add(ctx, at, field, "bound-tightened", false, `${fieldOf(field)}: multipleOf ${b} added`)
  // Every multiple of `a` is a multiple of `b` exactly when `a` is a multiple of `b`.
  const ratio = a / b
  const ok = Math.abs(ratio - Math.round(ratio)) < 1e-9
  add(ctx, at, field, ok ? "bound-relaxed" : "bound-tightened", ok, `${fieldOf(field)}: multipleOf changed from ${a} to ${b}`)
}

const comparePattern = (ctx: Context, w: Obj, r: Obj, pointer: string, field: string) => {
  const a = typeof w.pattern === "string" ? w.pattern : undefined
  const b = typeof r.pattern === "string" ? r.pattern : undefined
  if (a === b) return
  const at = `${pointer}/pattern`
  if (b === undefined) add(ctx, at, field, "pattern-removed", true, `${fieldOf(field)}: pattern ${a} removed`)
  else if (a === undefined) add(ctx, at, field, "pattern-added", false, `${fieldOf(field)}: pattern ${b} added`)
  else add(ctx, at, field, "pattern-changed", false, `${fieldOf(field)}: pattern changed from ${a} to ${b}`)
}

/**
 * The changes from `writer` to `reader`: the reader reads every document valid under the writer exactly
 * when every change is compatible (as far as the modelled keywords tell).
 */
export const readable = (writer: JsonSchema, reader: JsonSchema): ReadonlyArray<Change> => {
  const ctx: Context = { writerRoot: writer, readerRoot: reader, changes: [], visiting: new Set() }
  compare(ctx, writer, reader, "#", "")
  return ctx.changes
}

/** Whether `reader` reads every document `writer` accepts. */
export const canRead = (writer: JsonSchema, reader: JsonSchema): boolean => allCompatible(readable(writer, reader))

/** Which way a comparison between two versions goes. */
export type Direction = "backward" | "forward"

/** One incompatibility between two versions of a schema. */
export interface VersionConflict {
  readonly direction: Direction
  /** The version compared with (the new one is the reader for `backward`, the writer for `forward`). */
  readonly against: number
  readonly changes: ReadonlyArray<Change>
}

/** The directions a mode checks. */
export const directionsOf = (mode: Mode): ReadonlyArray<Direction> =>
  mode.startsWith("BACKWARD") ? ["backward"] : mode.startsWith("FORWARD") ? ["forward"] : mode.startsWith("FULL") ? ["backward", "forward"] : []

/** Whether a mode compares with every earlier version rather than the latest. */
export const isTransitive = (mode: Mode): boolean => mode.endsWith("_TRANSITIVE")

/** One version of a schema. */
export interface Version {
  readonly version: number
  readonly schema: JsonSchema
}

/**
 * Checks `next` against `history` (earlier versions, any order) under `mode`, as a registry does when a new
 * version is registered: the latest earlier version, or all of them for a transitive mode. Empty: compatible.
 */
export const checkVersion = (mode: Mode, history: ReadonlyArray<Version>, next: Version): ReadonlyArray<VersionConflict> => {
  const earlier = history.filter((v) => v.version <= next.version).slice().sort((a, b) => a.version - b.version)
  const against = isTransitive(mode) ? earlier : earlier.slice(-1)
  const conflicts: Array<VersionConflict> = []
  for (const previous of against) {
    for (const direction of directionsOf(mode)) {
      const changes = direction === "backward" ? readable(previous.schema, next.schema) : readable(next.schema, previous.schema)
      const breaking = changes.filter((c) => !c.compatible)
      if (breaking.length > 0) conflicts.push({ direction, against: previous.version, changes: breaking })
    }
  }
  return conflicts
}

/** Whether `next` may follow `previous` under `mode` (a non-transitive question: one earlier version). */
export const isCompatible = (mode: Mode, previous: JsonSchema, next: JsonSchema): boolean =>
  checkVersion(mode, [{ version: 0, schema: previous }], { version: 1, schema: next }).length === 0

/**
 * The schema as a reader that ignores undeclared properties sees it: every object's
 * `additionalProperties: false` removed. Bulwark decodes payloads with `onExcessProperty: "ignore"`, so this
 * is what a Bulwark consumer really accepts.
 */
export const ignoringExcessProperties = (schema: JsonSchema): JsonSchema => {
  const walk = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(walk)
    if (!isObj(node)) return node
    const out: Record<string, unknown> = {}
    for (const [key, value] of Object.entries(node)) {
      if (key === "additionalProperties" && value === false) continue
      out[key] = key === "enum" || key === "const" || key === "default" || key === "examples" ? value : walk(value)
    }
    return out
  }
  return walk(schema) as JsonSchema
}

/** How to fix an incompatible change, in one sentence. */
export const fixHint = (change: Change): string => {
  const f = change.field
  switch (change.kind) {
    case "required-property-added-to-closed-model":
    case "property-made-required":
      return `make "${f}" optional (or give it a default) on the reading side first; require it only once every writer writes it`
    case "property-added-to-open-model":
      return `close the model (additionalProperties: false) before adding "${f}", or add it with an empty schema`
    case "property-removed-from-closed-model":
    case "property-removed-not-covered-by-partial-model":
      return `keep writing "${f}" until every reader has dropped it, or let the reader ignore undeclared properties`
    case "additional-properties-forbidden":
    case "additional-properties-narrowed":
      return `keep accepting undeclared properties at ${f} while any writer may send them`
    case "type-changed":
    case "type-narrowed":
    case "union-narrowed":
      return `do not change "${f}" in place: add a new field with the new type, write both, and retire the old one after the readers moved`
    case "enum-narrowed":
    case "enum-added":
      return `keep accepting every value a writer may still send for "${f}"; remove values only after no writer sends them`
    case "bound-tightened":
    case "pattern-added":
    case "pattern-changed":
    case "unique-items-added":
      return `relax the constraint on "${f}" on the reading side, or tighten it on the writers first`
    default:
      return `make the reader accept what the writer writes at "${f}"`
  }
}
