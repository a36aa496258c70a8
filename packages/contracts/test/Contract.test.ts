import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Fiber, Schema } from "effect"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Envelope, SchemaUse } from "@bulwark/core"
import { Memory, Transport } from "@bulwark/transport"
import * as AsyncApi from "../src/AsyncApi.js"
import * as Capture from "../src/Capture.js"
import * as Check from "../src/Check.js"
import * as Contract from "../src/Contract.js"
import * as Project from "../src/Project.js"

const Paid = Schema.Struct({ orderId: Schema.NonEmptyString, amount: Schema.Int, sequence: Schema.Int })
const paid = (schema: Schema.Schema<any, any, never>, version: number, compatibility?: "BACKWARD" | "BACKWARD_TRANSITIVE") =>
  Contract.producer({ topic: "order-paid", type: "com.example.order.paid", source: "/orders", schema, version, ...(compatibility ? { compatibility } : {}) })
const orders = (schema: Schema.Schema<any, any, never>, version: number, compatibility?: "BACKWARD" | "BACKWARD_TRANSITIVE") =>
  Contract.service("orders", { produces: [paid(schema, version, compatibility)] })
const shipping = (schema: Schema.Schema<any, any, never> = Paid) =>
  Contract.service("shipping", { consumes: [Contract.consumer({ topic: "order-paid", group: "shipping", schema })] })

const withDir = <A>(f: (dir: string) => Promise<A>) => async () => {
  const dir = mkdtempSync(join(tmpdir(), "bulwark-contracts-"))
  try {
    return await f(dir)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

describe("Contract", () => {
  it("names a contract version in a dataschema URI and reads it back", () => {
    const p = paid(Paid, 3)
    expect(p.id).toBe("order-paid/com.example.order.paid")
    expect(p.dataschema).toBe("urn:bulwark:contract:order-paid/com.example.order.paid:v3")
    expect(Contract.parseDataschema(p.dataschema)).toEqual({ id: p.id, version: 3 })
    expect(Contract.parseDataschema("https://example.com/schema.json")).toBeUndefined()
    expect(Contract.parseDataschema(undefined)).toBeUndefined()
  })

  it.effect("refuses bad declarations with a typed error", () =>
    Effect.gen(function*() {
      const twice = yield* Effect.either(Contract.validate([orders(Paid, 1), orders(Paid, 1)]))
      expect(Either.isLeft(twice) && twice.left.message).toBe("service orders is declared twice")
      const badVersion = yield* Effect.either(Contract.validate([orders(Paid, 0)]))
      expect(Either.isLeft(badVersion) && badVersion.left._tag).toBe("ContractDeclarationError")
      const badName = yield* Effect.either(Contract.validate([Contract.service("a b", {})]))
      expect(Either.isLeft(badName)).toBe(true)
    }))

  it.effect("a schema without a JSON Schema form is an export error, not a defect", () =>
    Effect.gen(function*() {
      const opaque = Schema.declare((u): u is Date => u instanceof Date)
      const result = yield* Effect.either(Contract.toFile(orders(opaque, 1)))
      expect(Either.isLeft(result) && result.left._tag).toBe("ContractExportError")
    }))

  it.effect("a file that is not a contract file is a typed error naming the file", () =>
    Effect.gen(function*() {
      const notJson = yield* Effect.either(Contract.parse("x.json", "{"))
      expect(Either.isLeft(notJson) && notJson.left.file).toBe("x.json")
      const wrongShape = yield* Effect.either(Contract.parse("y.json", JSON.stringify({ bulwarkContracts: 1, service: "s" })))
      expect(Either.isLeft(wrongShape) && wrongShape.left.message).toContain("y.json is not a contract file")
    }))

  it("exports one file per service, carries earlier versions into the history, and is idempotent", withDir(async (dir) => {
    const first = await Effect.runPromise(Project.exportTo([orders(Paid, 1), shipping()], dir))
    expect(first.written.map((p) => p.slice(dir.length + 1)).sort()).toEqual(["orders.contract.json", "shipping.contract.json"])
    const file = JSON.parse(readFileSync(join(dir, "orders.contract.json"), "utf8")) as Contract.ContractFile
    expect(file.produces[0]!.schema).toMatchObject({ $schema: "https://json-schema.org/draft/2020-12/schema", additionalProperties: false })
    expect(file.produces[0]!.history).toEqual([])
    const again = await Effect.runPromise(Project.exportTo([orders(Paid, 1), shipping()], dir))
    expect(again.written).toEqual([])

    const V2 = Schema.Struct({ ...Paid.fields, note: Schema.optional(Schema.String) })
    await Effect.runPromise(Project.exportTo([orders(V2, 2), shipping()], dir))
    const second = JSON.parse(readFileSync(join(dir, "orders.contract.json"), "utf8")) as Contract.ContractFile
    expect(second.produces[0]!.version).toBe(2)
    expect(second.produces[0]!.history.map((h) => h.version)).toEqual([1])
    expect(second.produces[0]!.history[0]!.schema).toEqual(file.produces[0]!.schema)
  }))
})

describe("Check", () => {
  it("passes a compatible producer change and names field, direction, consumer and fix for a breaking one", withDir(async (dir) => {
    await Effect.runPromise(Project.exportTo([orders(Paid, 1), shipping()], dir))
    // Compatible: an optional field (shipping ignores undeclared properties).
    const V2 = Schema.Struct({ ...Paid.fields, note: Schema.optional(Schema.String) })
    const ok = await Effect.runPromise(Project.checkAgainst([orders(V2, 2)], dir))
    expect(ok.ok).toBe(true)
    // The committed orders file is now out of date: a warning, an error only when frozen.
    expect(ok.findings.map((f) => [f.kind, f.severity])).toEqual([["stale-contract-file", "warning"]])
    expect((await Effect.runPromise(Project.checkAgainst([orders(V2, 2)], dir, { frozen: true }))).ok).toBe(false)

    // Breaking: `sequence` dropped.
    const { sequence: _sequence, ...rest } = Paid.fields
    const broken = await Effect.runPromise(Project.checkAgainst([orders(Schema.Struct(rest), 2)], dir))
    expect(broken.ok).toBe(false)
    const reader = broken.findings.find((f) => f.kind === "consumer-cannot-read")!
    expect(reader).toMatchObject({
      severity: "error",
      topic: "order-paid",
      field: "sequence",
      consumer: { service: "shipping", group: "shipping" },
      producer: { service: "orders", version: 2 }
    })
    expect(reader.direction).toBe("producer orders (com.example.order.paid v2) → consumer shipping (group shipping)")
    expect(reader.fix).toBe('orders: keep writing "sequence" (add any replacement beside it), or shipping/shipping: make "sequence" optional first')
    const version = broken.findings.find((f) => f.kind === "incompatible-version")!
    expect(version).toMatchObject({ field: "sequence", direction: "BACKWARD: v2 reading data written with v1" })
    const text = Check.renderText(broken)
    expect(text).toContain("BREAKING order-paid: producer orders (com.example.order.paid v2) → consumer shipping (group shipping)")
    expect(text).toContain("field sequence:")
    const junit = Check.renderJUnit(broken)
    expect(junit).toMatch(/<testsuite name="bulwark contracts" tests="\d+" failures="2">/)
    expect(junit).toContain('<failure message="field sequence:')
  }))

  it("keeps every version still in flight readable, reports a version that went back, and a change without a bump", withDir(async (dir) => {
    const V2 = Schema.Struct({ ...Paid.fields, note: Schema.optional(Schema.String) })
    await Effect.runPromise(Project.exportTo([orders(Paid, 1), shipping()], dir))
    await Effect.runPromise(Project.exportTo([orders(V2, 2), shipping()], dir))
    // A consumer that now requires `note` cannot read v1 messages still in outboxes and dead-letter stores.
    const strict = Schema.Struct({ ...Paid.fields, note: Schema.String })
    const report = await Effect.runPromise(Project.checkAgainst([shipping(strict)], dir))
    expect(report.findings.filter((f) => f.kind === "consumer-cannot-read").map((f) => [f.field, f.producer?.version])).toEqual([["note", 1], ["note", 2]])
    expect(report.findings.find((f) => f.producer?.version === 1)!.direction).toContain("for messages still written with v1")

    const back = await Effect.runPromise(Project.checkAgainst([orders(Paid, 1)], dir))
    expect(back.findings.some((f) => f.kind === "version-regressed" && f.severity === "error")).toBe(true)

    const V2b = Schema.Struct({ ...V2.fields, extra: Schema.optional(Schema.Number) })
    const inPlace = await Effect.runPromise(Project.checkAgainst([orders(V2b, 2)], dir))
    expect(inPlace.ok).toBe(true)
    expect(inPlace.findings.some((f) => f.kind === "changed-without-version-bump" && f.severity === "warning")).toBe(true)
  }))

  it("judges a change against another service's published file (can I deploy)", withDir(async (dir) => {
    const published = join(dir, "published")
    await Effect.runPromise(Project.exportTo([shipping()], published))
    const own = join(dir, "own")
    const { amount: _amount, ...rest } = Paid.fields
    const renamed = Schema.Struct({ ...rest, amountCents: Schema.Int })
    const report = await Effect.runPromise(Project.checkAgainst([orders(renamed, 1)], own, { against: [join(published, "shipping.contract.json")] }))
    expect(report.findings.filter((f) => f.severity === "error").map((f) => [f.kind, f.field, f.consumer?.service])).toEqual([
      ["consumer-cannot-read", "amount", "shipping"]
    ])
    // Without the published file nobody reads order-paid: nothing to break.
    expect((await Effect.runPromise(Project.checkAgainst([orders(renamed, 1)], own))).ok).toBe(true)
  }))

  it("a consumer that declares its types is checked only against producers of those types; one with no producer is reported", () => {
    const other = Contract.producer({ topic: "order-paid", type: "com.example.order.refunded", source: "/orders", schema: Schema.Struct({ x: Schema.String }), version: 1 })
    const files = Effect.runSync(Effect.forEach([
      Contract.service("orders", { produces: [paid(Paid, 1), other] }),
      Contract.service("shipping", { consumes: [Contract.consumer({ topic: "order-paid", group: "shipping", schema: Paid, types: ["com.example.order.paid"] })] }),
      Contract.service("audit", { consumes: [Contract.consumer({ topic: "nowhere", group: "audit", schema: Paid })] })
    ], (s) => Contract.toFile(s)))
    const report = Check.check({ current: files })
    expect(report.ok).toBe(true)
    expect(report.findings.map((f) => [f.kind, f.topic])).toEqual([["no-producer", "nowhere"]])
  })
})

describe("AsyncApi", () => {
  it("documents topics as channels and CloudEvents types as messages, every $ref resolving inside the document", () => {
    const files = Effect.runSync(Effect.forEach([orders(Paid, 2), shipping()], (s) => Contract.toFile(s)))
    const doc = AsyncApi.make(files, { title: "Orders", version: "1.0.0" }) as any
    expect(doc.asyncapi).toBe("3.0.0")
    expect(doc.channels["order-paid"].address).toBe("order-paid")
    const message = doc.components.messages["com.example.order.paid.v2"]
    expect(message.name).toBe("com.example.order.paid")
    expect(message.payload.schema.properties.type).toEqual({ const: "com.example.order.paid" })
    expect(message.payload.schema.properties.dataschema).toEqual({ const: "urn:bulwark:contract:order-paid/com.example.order.paid:v2" })
    expect(message.payload.schema.properties.data.required).toEqual(["orderId", "amount", "sequence"])
    expect(doc.operations["orders.send.order-paid.com.example.order.paid"].action).toBe("send")
    expect(doc.operations["shipping.receive.order-paid.shipping"].messages).toEqual([{ $ref: "#/channels/order-paid/messages/com.example.order.paid.v2" }])
    const refs: Array<string> = []
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) return node.forEach(walk)
      if (typeof node !== "object" || node === null) return
      for (const [k, v] of Object.entries(node)) k === "$ref" && typeof v === "string" ? refs.push(v) : walk(v)
    }
    walk(doc)
    expect(refs.length).toBeGreaterThan(5)
    for (const ref of refs) {
      const target = ref.slice(2).split("/").reduce<any>((node, key) => node?.[key], doc)
      expect(target, ref).toBeDefined()
    }
  })
})

describe("Capture", () => {
  it.effect("records what the transport really publishes and consumes, and finds what the contracts do not declare", () =>
    Effect.gen(function*() {
      const Drifted = Schema.Struct({ ...Paid.fields, extra: Schema.String })
      const program = Effect.gen(function*() {
        const envelope = yield* Envelope.make({ type: "com.example.order.paid", source: "/orders", subject: "c", data: { orderId: "o", amount: 1, sequence: 1 } })
        yield* Transport.publishEnvelopes(Paid)("order-paid", [envelope, envelope])
        const refund = yield* Envelope.make({ type: "com.example.order.refunded", source: "/orders", subject: "c", data: { orderId: "o", amount: 1, sequence: 1 } })
        yield* Transport.publishEnvelopes(Paid)("order-paid", [refund])
        // A consumer whose schema drifted from its declaration (started, then interrupted).
        const consumer = yield* Effect.fork(Transport.consume("order-paid", () => Effect.void, { schema: Drifted, group: "shipping" }))
        yield* Effect.yieldNow()
        yield* Fiber.interrupt(consumer)
        return "done"
      }).pipe(Effect.provide(Memory.layer()))
      const { result, uses } = yield* Capture.capture(program)
      expect(result).toBe("done")
      expect(uses.map((u) => `${u.role} ${u.topic} ${u.type ?? u.group}`)).toEqual([
        "produce order-paid com.example.order.paid",
        "produce order-paid com.example.order.refunded",
        "consume order-paid shipping"
      ])
      const gaps = Capture.undeclared(uses, [orders(Paid, 1), shipping()])
      expect(gaps.map((g) => g.reason)).toEqual([
        "com.example.order.refunded is written to order-paid but no producer contract declares it",
        "group shipping decodes order-paid with a schema other than the declared one"
      ])
      // Nothing is recorded when nobody records.
      yield* SchemaUse.report(() => { throw new Error("not called without a recorder") })
    }).pipe(Effect.scoped))
})
