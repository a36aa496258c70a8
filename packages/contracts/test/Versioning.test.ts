import { type Delivery, Envelope, Failure, Handler, Pipeline } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Effect, pipe, Schema, Stream } from "effect"
import * as Contract from "../src/Contract.js"
import * as Versioning from "../src/Versioning.js"

const Paid = Schema.Struct({ orderId: Schema.String })
const v1 = Contract.producer({ topic: "order-paid", type: "com.example.order.paid", source: "/orders", schema: Paid, version: 1 })
const v2 = Contract.producer({ ...v1, version: 2 })
const v3 = Contract.producer({ ...v1, version: 3 })
const other = Contract.producer({ topic: "order-paid", type: "com.example.order.refunded", source: "/orders", schema: Paid, version: 1 })
const encode = Envelope.encode(Paid)

type Settled = { readonly id: string; readonly outcome: "ack" | "dead-letter"; readonly category?: string; readonly tag?: string; readonly message?: string }

/** Real envelopes (encoded as producers do) through a real pipeline; records how each delivery settled. */
const run = (dataschemas: ReadonlyArray<[string, string | undefined]>, handler: Handler.Handler<typeof Paid.Type, any, never>) =>
  Effect.gen(function*() {
    const settled: Array<Settled> = []
    const deliveries: Array<Delivery.Delivery> = []
    for (const [id, dataschema] of dataschemas) {
      const envelope = yield* Envelope.make({ id, type: v1.type, source: v1.source, subject: "c", data: { orderId: id }, ...(dataschema === undefined ? {} : { dataschema }) })
      const payload = yield* encode(envelope)
      deliveries.push({
        message: { id, topic: "order-paid", key: "c", payload, headers: {} },
        attempt: 1,
        ack: Effect.sync(() => void settled.push({ id, outcome: "ack" })),
        nack: () => Effect.void,
        deadLetter: (reason) =>
          Effect.sync(() => void settled.push({ id, outcome: "dead-letter", category: reason.category, tag: reason.error.tag, message: reason.error.message }))
      })
    }
    yield* Pipeline.run(Stream.fromIterable(deliveries), handler, { schema: Paid, concurrency: 1 })
    return settled
  })

describe("Versioning", () => {
  it.effect("accept: handles the accepted versions (and unversioned envelopes as the lowest); dead-letters the rest as schema, naming the dataschema", () =>
    Effect.gen(function*() {
      const handled: Array<string> = []
      const handler = pipe(
        (e: Envelope.Envelope<typeof Paid.Type>) => Effect.sync(() => void handled.push(e.id)),
        Handler.timeout("1 second"),
        Versioning.accept(v1.id, [1])
      )
      // The wrapper keeps the stages of what it wraps, so the pipeline still checks their order.
      expect(Handler.stagesOf(handler)).toEqual(["timeout"])
      const settled = yield* run([["a", v1.dataschema], ["b", v2.dataschema], ["c", undefined], ["d", other.dataschema]], handler)
      expect(handled).toEqual(["a", "c"])
      expect(settled.map((s) => [s.id, s.outcome, s.category, s.tag])).toEqual([
        ["a", "ack", undefined, undefined],
        ["b", "dead-letter", "schema", "UnsupportedContractVersion"],
        ["c", "ack", undefined, undefined],
        ["d", "dead-letter", "schema", "UnsupportedContractVersion"]
      ])
      expect(settled[1]!.message).toContain(v2.dataschema)
    }))

  it.effect("accept with unversioned: reject refuses an envelope without dataschema", () =>
    Effect.gen(function*() {
      const settled = yield* run([["a", undefined]], Versioning.accept(v1.id, [1], { unversioned: "reject" })(() => Effect.void))
      expect(settled.map((s) => s.outcome)).toEqual(["dead-letter"])
    }))

  it.effect("route: each version to its handler; an unrouted version is a permanent schema failure", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      const handler = Versioning.route(v1.id, {
        1: (e) => Effect.sync(() => void seen.push(`v1:${e.id}`)),
        2: (e) => Effect.sync(() => void seen.push(`v2:${e.id}`))
      })
      const settled = yield* run([["a", v1.dataschema], ["b", v2.dataschema], ["c", v3.dataschema], ["d", undefined]], handler)
      expect(seen).toEqual(["v1:a", "v2:b", "v1:d"])
      expect(settled.filter((s) => s.outcome === "dead-letter").map((s) => s.id)).toEqual(["c"])
      const verdict = yield* Failure.classify(new Versioning.UnsupportedContractVersion({ envelopeId: "c", dataschema: v3.dataschema, contract: v1.id, accepted: [1, 2] }))
      expect(verdict).toEqual({ classification: "permanent", category: "schema" })
    }))
})
