import { expect, layer } from "@effect/vitest"
import { Effect, Option, type Layer, type Scope } from "effect"
import type * as DispatchStore from "../src/DispatchStore.js"
import { Attempt } from "../src/Sender.js"

/** How the contract gets a fresh, empty store of one driver. */
export interface Harness<R> {
  readonly name: string
  readonly layer: Layer.Layer<R, unknown>
  readonly fresh: Effect.Effect<DispatchStore.Service, never, R | Scope.Scope>
}

const bytes = (text: string) => new TextEncoder().encode(text)
const message = (id: string, createdAt = 1_000) => ({ id, body: bytes(`{"id":"${id}"}`), createdAt })
const attempt = (messageId: string, endpointId: string, n: number, outcome: "delivered" | "failed" = "failed") =>
  new Attempt({ endpointId, messageId, attempt: n, at: 1_000 + n, outcome, status: outcome === "failed" ? 503 : 200, latencyMillis: 3, excerpt: "x" })
const lease = { workerId: "w1", limit: 10, leaseMillis: 30_000 }

/** The DispatchStore contract, registered for one driver. */
export const contract = <R>(harness: Harness<R>): void => {
  layer(harness.layer, { excludeTestServices: true, timeout: "60 seconds" })(`DispatchStore contract: ${harness.name}`, (it) => {
    const withStore = <A, E>(f: (store: DispatchStore.Service) => Effect.Effect<A, E, R | Scope.Scope>) =>
      Effect.flatMap(harness.fresh, f)

    it.scoped("endpoints: put keeps the disabled state and failure run; update patches; unknown is none", () =>
      withStore((store) =>
        Effect.gen(function*() {
          yield* store.putEndpoint({ id: "e1", url: "https://a.example/hook", secrets: ["whsec_a"] })
          yield* store.updateEndpoint("e1", { disabled: true, disabledReason: "410", failingSince: 5 })
          yield* store.putEndpoint({ id: "e1", url: "https://b.example/hook", secrets: ["whsec_b", "whsec_c"] })
          const e1 = Option.getOrThrow(yield* store.endpoint("e1"))
          expect(e1).toMatchObject({ url: "https://b.example/hook", secrets: ["whsec_b", "whsec_c"], disabled: true, disabledReason: "410", failingSince: 5 })
          yield* store.updateEndpoint("e1", { disabled: false, disabledReason: null, failingSince: null })
          const cleared = Option.getOrThrow(yield* store.endpoint("e1"))
          expect(cleared.disabled).toBe(false)
          expect(cleared.disabledReason).toBeUndefined()
          expect(cleared.failingSince).toBeUndefined()
          expect(Option.isNone(yield* store.endpoint("nope"))).toBe(true)
          expect((yield* store.endpoints).map((e) => e.id)).toEqual(["e1"])
        })))

    it.scoped("enqueue is idempotent per (message, endpoint) and keeps the message's bytes and headers", () =>
      withStore((store) =>
        Effect.gen(function*() {
          yield* store.putEndpoint({ id: "e1", url: "https://a.example/", secrets: ["whsec_a"] })
          yield* store.putEndpoint({ id: "e2", url: "https://b.example/", secrets: ["whsec_b"] })
          const m = { ...message("m1"), contentType: "text/plain", headers: { "x-tenant": "t1" } }
          expect(yield* store.enqueue(m, ["e1", "e1"])).toBe(1)
          expect(yield* store.enqueue(m, ["e1", "e2"])).toBe(1)
          expect(yield* store.enqueue(m, [])).toBe(0)
          const claims = yield* store.claim({ ...lease, now: 1_000 })
          expect(claims.map((c) => c.endpoint.id).sort()).toEqual(["e1", "e2"])
          const claim = claims[0]!
          expect(new TextDecoder().decode(claim.message.body)).toBe(`{"id":"m1"}`)
          expect(claim.message).toMatchObject({ id: "m1", contentType: "text/plain", headers: { "x-tenant": "t1" } })
          expect(claim.delivery).toMatchObject({ state: "pending", attempts: 0, dueAt: 1_000 })
        })))

    it.scoped("claim takes due deliveries only, oldest due first, each once while its lease holds", () =>
      withStore((store) =>
        Effect.gen(function*() {
          yield* store.putEndpoint({ id: "e", url: "https://a.example/", secrets: ["whsec_a"] })
          yield* store.enqueue(message("late", 5_000), ["e"])
          yield* store.enqueue(message("early", 1_000), ["e"])
          yield* store.enqueue(message("mid", 2_000), ["e"])
          expect((yield* store.claim({ ...lease, now: 500 })).length).toBe(0)
          const first = yield* store.claim({ ...lease, now: 3_000, limit: 1 })
          expect(first.map((c) => c.message.id)).toEqual(["early"])
          const second = yield* store.claim({ ...lease, now: 3_000 })
          expect(second.map((c) => c.message.id)).toEqual(["mid"])
          expect(yield* store.claim({ ...lease, now: 3_000 })).toEqual([])
          // The lease runs out: another worker takes them, with new tokens.
          const retaken = yield* store.claim({ ...lease, workerId: "w2", now: 3_000 + 30_000 })
          expect(retaken.map((c) => c.message.id)).toEqual(["early", "mid", "late"])
          expect(retaken[0]!.token).not.toBe(first[0]!.token)
          expect(Option.getOrThrow(yield* store.nextDue)).toBe(3_000 + 60_000)
        })))

    it.scoped("settle: only the current token settles; the attempt is recorded with it, or not at all", () =>
      withStore((store) =>
        Effect.gen(function*() {
          yield* store.putEndpoint({ id: "e", url: "https://a.example/", secrets: ["whsec_a"] })
          yield* store.enqueue(message("m"), ["e"])
          const [stale] = yield* store.claim({ ...lease, now: 1_000, leaseMillis: 10 })
          const [fresh] = yield* store.claim({ ...lease, workerId: "w2", now: 2_000 })
          const ids = { messageId: "m", endpointId: "e" }
          expect(yield* store.settle(stale!.token, ids, attempt("m", "e", 1, "delivered"), { _tag: "Delivered" }, 2_001)).toBe(false)
          expect(yield* store.attempts("m")).toEqual([])
          expect(yield* store.settle(fresh!.token, ids, attempt("m", "e", 1), { _tag: "Retry", dueAt: 7_000 }, 2_002)).toBe(true)
          // A token settles once.
          expect(yield* store.settle(fresh!.token, ids, attempt("m", "e", 9), { _tag: "Delivered" }, 2_003)).toBe(false)
          const [delivery] = yield* store.deliveries({ messageId: "m" })
          expect(delivery).toMatchObject({ state: "pending", attempts: 1, dueAt: 7_000, updatedAt: 2_002 })
          expect((yield* store.claim({ ...lease, now: 6_999 })).length).toBe(0)
          const [again] = yield* store.claim({ ...lease, now: 7_000 })
          expect(again!.delivery.attempts).toBe(1)
          expect(yield* store.settle(again!.token, ids, attempt("m", "e", 2, "delivered"), { _tag: "Delivered" }, 7_001)).toBe(true)
          expect((yield* store.attempts("m")).map((a) => [a.attempt, a.outcome, a.status])).toEqual([[1, "failed", 503], [2, "delivered", 200]])
          expect((yield* store.attempts("m"))[0]).toBeInstanceOf(Attempt)
          expect(yield* store.deliveries({ state: "delivered" })).toHaveLength(1)
          expect(Option.isNone(yield* store.nextDue)).toBe(true)
          // Settled without an attempt (a disabled endpoint): no attempt recorded, count unchanged.
          yield* store.enqueue(message("n"), ["e"])
          const [n] = yield* store.claim({ ...lease, now: 8_000 })
          expect(yield* store.settle(n!.token, { messageId: "n", endpointId: "e" }, undefined, { _tag: "Failed", reason: "disabled" }, 8_001)).toBe(true)
          expect((yield* store.deliveries({ messageId: "n" }))[0]).toMatchObject({ state: "failed", failReason: "disabled", attempts: 0 })
          expect(yield* store.attempts("n")).toEqual([])
        })))

    it.scoped("requeue: failed deliveries by endpoint and date (recover); delivered ones only when asked (resend)", () =>
      withStore((store) =>
        Effect.gen(function*() {
          yield* store.putEndpoint({ id: "a", url: "https://a.example/", secrets: ["whsec_a"] })
          yield* store.putEndpoint({ id: "b", url: "https://b.example/", secrets: ["whsec_b"] })
          for (const [id, at] of [["old", 1_000], ["new1", 5_000], ["new2", 6_000]] as const) yield* store.enqueue(message(id, at), ["a", "b"])
          for (const c of yield* store.claim({ ...lease, limit: 100, now: 10_000 })) {
            const ok = c.message.id === "new2" && c.endpoint.id === "b"
            yield* store.settle(c.token, { messageId: c.message.id, endpointId: c.endpoint.id }, attempt(c.message.id, c.endpoint.id, 1, ok ? "delivered" : "failed"), ok ? { _tag: "Delivered" } : { _tag: "Failed", reason: "exhausted" }, 10_001)
          }
          expect(yield* store.requeue({ endpointId: "a", since: 5_000 }, 20_000)).toBe(2)
          expect((yield* store.deliveries({ endpointId: "a", state: "pending" })).map((d) => [d.messageId, d.dueAt, d.attempts])).toEqual([["new1", 20_000, 1], ["new2", 20_000, 1]])
          expect(yield* store.requeue({ messageId: "new2" }, 21_000)).toBe(0)
          expect(yield* store.requeue({ messageId: "new2", includeDelivered: true }, 21_000)).toBe(1)
          expect(yield* store.requeue({ state: "failed", limit: 1 }, 22_000)).toBe(1)
          // Failed were old→a, old→b and new1→b; one of them is pending again.
          expect((yield* store.deliveries({ state: "failed" })).length).toBe(2)
          expect((yield* store.deliveries({ limit: 2 })).length).toBe(2)
        })))

    it.scoped("concurrent claims never hand one delivery to two workers", () =>
      withStore((store) =>
        Effect.gen(function*() {
          yield* store.putEndpoint({ id: "e", url: "https://a.example/", secrets: ["whsec_a"] })
          for (let i = 0; i < 60; i++) yield* store.enqueue(message(`m${i}`, 1_000 + i), ["e"])
          const batches = yield* Effect.all(
            Array.from({ length: 6 }, (_, w) => store.claim({ workerId: `w${w}`, now: 5_000, limit: 15, leaseMillis: 30_000 })),
            { concurrency: "unbounded" }
          )
          const ids = batches.flat().map((c) => c.message.id)
          expect(new Set(ids).size).toBe(ids.length)
          expect(ids.length).toBe(60)
        })))
  })
}
