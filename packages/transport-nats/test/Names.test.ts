import { describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import * as Names from "../src/internal/names.js"

const validToken = /^[A-Za-z0-9_-]+$/

describe("topic and group names", () => {
  it.prop("any topic maps to a valid, reversible stream name and subject token", { topic: fc.string({ minLength: 1, maxLength: 40, unit: "binary" }) }, ({ topic }) => {
      const names = Names.topicNames("bw", topic)
      if (!Names.isWellFormed(topic)) {
        // Lone surrogates have no UTF-8 form: rejected rather than silently mapped onto U+FFFD's stream.
        expect(names).toContain("well-formed")
        return
      }
      if (typeof names === "string") throw new Error(names)
      const token = names.stream.slice("bw_".length)
      expect(names.stream).toMatch(validToken)
      expect(names.subject).toBe(`bw.${token}`)
      expect(Names.decodeToken(token)).toBe(topic)
  }, { fastCheck: { numRuns: 200 } })

  it("a topic that starts with U+FEFF keeps it through the round trip (found by the property above)", () => {
    const topic = "\ufeff\u0000"
    const names = Names.topicNames("bw", topic)
    if (typeof names === "string") throw new Error(names)
    expect(Names.decodeToken(names.stream.slice("bw_".length))).toBe(topic)
  })

  it.prop("different topics never share a stream", { a: fc.string({ minLength: 1, unit: "grapheme" }), b: fc.string({ minLength: 1, unit: "grapheme" }) }, ({ a, b }) => {
    fc.pre(a !== b)
    expect(Names.encodeToken(a)).not.toBe(Names.encodeToken(b))
  }, { fastCheck: { numRuns: 200 } })

  it.effect("keeps readable topics readable and separates a topic from its dead-letter topic", () =>
    Effect.sync(() => {
      expect(Names.topicNames("bulwark", "orders-eu")).toEqual({ stream: "bulwark_orders-eu", subject: "bulwark.orders-eu" })
      expect(Names.topicNames("bulwark", "orders.dlq")).toEqual({ stream: "bulwark_orders_2Edlq", subject: "bulwark.orders_2Edlq" })
      expect(Names.encodeToken("a_b")).toBe("a_5Fb")
      expect(Names.durableName("billing")).toEqual({ durable: "billing" })
    }))

  it.effect("rejects what cannot be mapped", () =>
    Effect.sync(() => {
      expect(typeof Names.topicNames("bw", "")).toBe("string")
      expect(typeof Names.topicNames("bw", "x".repeat(300))).toBe("string")
      expect(typeof Names.durableName("")).toBe("string")
      expect(Names.isValidPrefix("bulwark-test")).toBe(true)
      expect(Names.isValidPrefix("has_underscore")).toBe(false)
      expect(Names.isValidPrefix("has.dot")).toBe(false)
      expect(Names.decodeToken("bad_ZZ")).toBeUndefined()
      expect(Names.topicNames("bw", "broken \uD800 surrogate")).toContain("well-formed")
      expect(Names.topicNames("bw", "emoji 🚀")).toMatchObject({ stream: "bw_emoji_20_F0_9F_9A_80" })
    }))
})
