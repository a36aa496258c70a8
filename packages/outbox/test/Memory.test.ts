/** The memory driver's own transactions (the contract suite covers the port). */
import type { Transport } from "@bulwark/transport"
import { expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Fiber, Option } from "effect"
import * as Outbox from "../src/Outbox.js"
import * as MemoryOutboxStore from "../src/OutboxStore/Memory.js"

const encoder = new TextEncoder()
const raw = (id: string, key = ""): Transport.OutgoingMessage => ({ id, key, payload: encoder.encode(id), headers: {} })

it.effect("onCommit callbacks run at commit, in order, before the rows appear; never on failure, defect or interruption", () =>
  Effect.gen(function*() {
    const store = yield* MemoryOutboxStore.MemoryOutboxStore
    const balances = new Map<string, number>()
    const seenAtCommit: Array<number> = []
    const pay = (account: string, amount: number) =>
      MemoryOutboxStore.transaction(Effect.gen(function*() {
        yield* MemoryOutboxStore.onCommit(() => balances.set(account, (balances.get(account) ?? 0) + amount))
        yield* Outbox.appendMessages("payments", [raw(`${account}-${amount}`, account)])
        yield* MemoryOutboxStore.onCommit(() => seenAtCommit.push(balances.get(account)!))
      }))

    yield* pay("a", 10)
    expect(balances.get("a")).toBe(10)
    expect(seenAtCommit).toEqual([10])
    expect(yield* store.backlog).toBe(1)

    expect(yield* Effect.flip(MemoryOutboxStore.transaction(Effect.zipRight(pay("a", 5), Effect.fail("no"))))).toBe("no")
    expect((yield* Effect.exit(MemoryOutboxStore.transaction(Effect.zipRight(pay("a", 5), Effect.die("boom")))))._tag).toBe("Failure")
    const inside = yield* Deferred.make<void>()
    const crashed = yield* MemoryOutboxStore.transaction(
      Effect.zipRight(pay("a", 7), Effect.zipRight(Deferred.succeed(inside, undefined), Effect.never))
    ).pipe(Effect.fork)
    yield* Deferred.await(inside)
    yield* Fiber.interrupt(crashed)

    expect(balances.get("a")).toBe(10)
    expect(yield* store.backlog).toBe(1)
    expect((yield* store.rows).map((r) => [r.id, r.message.id, r.state])).toEqual([[1, "a-10", "pending"]])
  }).pipe(Effect.provide(MemoryOutboxStore.layer())))

it.effect("a nested transaction is a savepoint: its failure drops only what it staged", () =>
  Effect.gen(function*() {
    const store = yield* MemoryOutboxStore.MemoryOutboxStore
    const log: Array<string> = []
    yield* MemoryOutboxStore.transaction(Effect.gen(function*() {
      yield* Outbox.appendMessages("t", [raw("outer")])
      yield* MemoryOutboxStore.onCommit(() => log.push("outer"))
      const inner = yield* MemoryOutboxStore.transaction(Effect.gen(function*() {
        yield* Outbox.appendMessages("t", [raw("inner")])
        yield* MemoryOutboxStore.onCommit(() => log.push("inner"))
        return yield* Effect.fail("inner failed")
      })).pipe(Effect.option)
      expect(Option.isNone(inner)).toBe(true)
      // Not committed yet: the outer transaction is still open.
      expect(yield* store.backlog).toBe(0)
    }))
    expect(log).toEqual(["outer"])
    expect((yield* store.rows).map((r) => r.message.id)).toEqual(["outer"])
  }).pipe(Effect.provide(MemoryOutboxStore.layer())))

it.effect("transactions run one at a time; a fiber waiting for its turn can be interrupted", () =>
  Effect.gen(function*() {
    const store = yield* MemoryOutboxStore.MemoryOutboxStore
    const order: Array<string> = []
    const release = yield* Deferred.make<void>()
    const entered = yield* Deferred.make<void>()
    const first = yield* MemoryOutboxStore.transaction(Effect.gen(function*() {
      order.push("first:start")
      yield* Deferred.succeed(entered, undefined)
      yield* Deferred.await(release)
      yield* Outbox.appendMessages("t", [raw("first")])
      order.push("first:end")
    })).pipe(Effect.fork)
    yield* Deferred.await(entered)
    const second = yield* MemoryOutboxStore.transaction(Effect.sync(() => order.push("second"))).pipe(Effect.fork)
    const third = yield* MemoryOutboxStore.transaction(Outbox.appendMessages("t", [raw("third")])).pipe(Effect.fork)
    yield* Effect.yieldNow()
    expect(order).toEqual(["first:start"])
    yield* Fiber.interrupt(third)
    yield* Deferred.succeed(release, undefined)
    yield* Fiber.join(first)
    yield* Fiber.join(second)
    expect(order).toEqual(["first:start", "first:end", "second"])
    expect((yield* store.rows).map((r) => r.message.id)).toEqual(["first"])
  }).pipe(Effect.provide(MemoryOutboxStore.layer())))

it.effect("an append inside another store's transaction is outside this store's", () =>
  Effect.gen(function*() {
    const mine = yield* MemoryOutboxStore.make()
    const other = yield* MemoryOutboxStore.make()
    const error = yield* other.transaction(mine.appendMessages("t", [raw("x")])).pipe(Effect.flip)
    expect(error._tag).toBe("OutsideTransaction")
    expect(yield* mine.backlog).toBe(0)
    expect(yield* other.backlog).toBe(0)
  }))

it.effect("a fiber that outlives its transaction can neither append to it nor stage a callback", () =>
  Effect.gen(function*() {
    const store = yield* MemoryOutboxStore.MemoryOutboxStore
    const leaked = yield* MemoryOutboxStore.transaction(
      Effect.map(Effect.context<MemoryOutboxStore.MemoryTransaction | Outbox.Outbox>(), (context) => context)
    )
    const append = yield* Outbox.appendMessages("t", [raw("late")]).pipe(Effect.provide(leaked), Effect.flip)
    expect(append._tag).toBe("OutsideTransaction")
    const staged = yield* MemoryOutboxStore.onCommit(() => undefined).pipe(Effect.provide(leaked), Effect.exit)
    expect(staged._tag === "Failure" && Cause.isDie(staged.cause)).toBe(true)
    expect(yield* store.backlog).toBe(0)
  }).pipe(Effect.provide(MemoryOutboxStore.layer())))
