import { Delivery, Failure, Supervise } from "@bulwark/core"
import { describe, expect, it } from "@effect/vitest"
import { Context, Data, Deferred, Effect, Either, Exit, Layer, Logger, Schedule, Stream } from "effect"
import * as Driver from "../src/Driver.js"
import { Publisher, Subscriber } from "../src/Transport.js"

const message: Delivery.Message = { id: "m-1", topic: "orders", key: "k", payload: new Uint8Array([1, 2]), headers: { a: "1" } }

const reason = new Delivery.DeadLetterReason({
  category: "schema",
  attempts: 2,
  error: new Failure.FailureRecord({ tag: "Bad", message: "bad", classification: "permanent", category: "schema" })
})

/** A settlement that records what the broker was asked to do. */
const recording = (fail?: unknown) => {
  const calls: Array<string> = []
  const copies: Array<{ topic: string; headers: Readonly<Record<string, string>> }> = []
  const outcome = (name: string) => Effect.suspend(() => {
    calls.push(name)
    return fail === undefined ? Effect.void : Effect.fail(fail)
  })
  const settlement: Driver.Settlement = {
    ack: outcome("ack"),
    nack: (delay) => outcome(`nack ${delay}`),
    deadLetter: (copy) =>
      Effect.zipRight(Effect.sync(() => copies.push({ topic: Driver.deadLetterTopic(message.topic), headers: copy.headers })), outcome("deadLetter"))
  }
  return { calls, copies, settlement }
}

describe("Driver.delivery", () => {
  it.effect("the first settle wins: later ones do nothing", () =>
    Effect.gen(function*() {
      const { calls, settlement } = recording()
      const delivery = Driver.delivery(message, 1, settlement)
      yield* delivery.nack({ delay: "250 millis" })
      yield* delivery.ack
      yield* delivery.deadLetter(reason)
      expect(calls).toEqual(["nack 250"])
    }))

  it.effect("dead-lettering hands the driver the copy with the reason in its headers", () =>
    Effect.gen(function*() {
      const { calls, copies, settlement } = recording()
      yield* Driver.delivery(message, 2, settlement).deadLetter(reason)
      expect(calls).toEqual(["deadLetter"])
      expect(copies[0]!.topic).toBe("orders.dlq")
      expect(copies[0]!.headers["a"]).toBe("1")
      expect(copies[0]!.headers[Delivery.DeadLetterHeaders.originTopic]).toBe("orders")
      expect(Delivery.readDeadLetterReason(copies[0]!.headers)?.category).toBe("schema")
      expect(Driver.deadLetterCopy(message, reason)).toMatchObject({ id: "m-1", key: "k", payload: message.payload })
    }))

  it.effect("a protocol failure is a DeliveryError; by default it still counts as the settle", () =>
    Effect.gen(function*() {
      const { calls, settlement } = recording(new Error("socket closed"))
      const delivery = Driver.delivery(message, 1, settlement)
      const error = yield* Effect.flip(delivery.ack)
      expect(error).toBeInstanceOf(Delivery.DeliveryError)
      expect(error.operation).toBe("ack")
      expect(error.messageId).toBe("m-1")
      yield* delivery.ack
      expect(calls).toEqual(["ack"])
    }))

  it.effect("with retryFailedSettle a failed settle may be tried again", () =>
    Effect.gen(function*() {
      const { calls, settlement } = recording(new Error("timeout"))
      const delivery = Driver.delivery(message, 1, settlement, { retryFailedSettle: true })
      yield* Effect.flip(delivery.ack)
      yield* Effect.flip(delivery.ack)
      expect(calls).toEqual(["ack", "ack"])
    }))
})

describe("Driver.delivery with a queued ack", () => {
  it.effect("ackQueued runs once, at the ack, and wins over a later settle; nack and deadLetter can be taken apart", () =>
    Effect.gen(function*() {
      const { calls, settlement } = recording()
      let queued = 0
      const delivery = Driver.delivery(message, 1, { ...settlement, ackQueued: () => void queued++ })
      const ack = delivery.ack
      expect(queued).toBe(0)
      yield* ack
      yield* delivery.ack
      const { nack, deadLetter } = delivery
      yield* nack()
      yield* deadLetter(reason)
      expect(queued).toBe(1)
      expect(calls).toEqual([])
      const other = Driver.delivery(message, 1, { ...settlement, ackQueued: () => void queued++ })
      const { nack: nackOther } = other
      yield* nackOther({ delay: "1 second" })
      yield* other.ack
      expect(calls).toEqual(["nack 1000"])
      expect(queued).toBe(1)
      expect(other).toMatchObject({ message, attempt: 1 })
    }))
})

describe("Driver.delivery copied with a spread", () => {
  it.effect("a copy keeps ack, nack and deadLetter, and settles the original: the first settle wins across copies", () =>
    Effect.gen(function*() {
      const { calls, settlement } = recording()
      const delivery = Driver.delivery(message, 1, settlement)
      const wrapped: Delivery.Delivery = { ...delivery, ack: Effect.zipRight(Effect.sync(() => calls.push("wrapped")), delivery.ack) }
      expect(Object.keys(wrapped)).toEqual(expect.arrayContaining(["message", "attempt", "ack", "nack", "deadLetter"]))
      yield* wrapped.deadLetter(reason)
      yield* wrapped.ack
      yield* delivery.nack()
      expect(calls).toEqual(["deadLetter", "wrapped"])
    }))
})

describe("Driver.userHeaders", () => {
  it("drops reserved names and prefixes, converts values to strings", () => {
    const reserved = Driver.reservedHeaders(["x-key"], ["Nats-"])
    expect(Driver.userHeaders({
      "x-key": "k",
      "nats-msg-id": "1",
      "Nats-Expected": "2",
      plain: "v",
      count: 3,
      flag: true,
      bytes: new TextEncoder().encode("é"),
      missing: undefined
    }, reserved)).toEqual({ plain: "v", count: "3", flag: "true", bytes: "é" })
    expect(Driver.userHeaders(undefined, reserved)).toEqual({})
  })

  it("a header named __proto__ stays a header and leaves the prototype alone", () => {
    const raw = JSON.parse(`{"__proto__": "p", "x": "1"}`) as Record<string, unknown>
    const headers = Driver.userHeaders(raw, Driver.reservedHeaders([]))
    expect(Object.getOwnPropertyNames(headers).sort()).toEqual(["__proto__", "x"])
    expect(Object.getPrototypeOf(headers)).toBe(Object.prototype)
  })

  it("redactUrl masks the password", () => {
    expect(Driver.redactUrl("amqp://user:secret@host:5672/vh")).toBe("amqp://user:***@host:5672/vh")
  })
})

class FakeConnectionError extends Data.TaggedError("FakeConnectionError")<{ readonly reason: string }> {}

describe("Driver.queuedBatcher", () => {
  it("items queued in one turn go out as one request, followed from the first item with the ids it carries", async () => {
    const sent: Array<ReadonlyArray<string>> = []
    const followed: Array<{ request: Promise<void>; ids: ReadonlyArray<string> }> = []
    const queue = Driver.queuedBatcher<string>(
      async (items) => {
        sent.push(items)
        if (items.includes("bad")) throw new Error("refused")
      },
      (request, ids) => followed.push({ request, ids })
    )
    queue("a", "m-a")
    queue("b", "m-b")
    // Followed before anything is sent: a close waiting on it also waits for what is still queued.
    expect(followed.length).toBe(1)
    expect(sent).toEqual([])
    await followed[0]!.request
    expect(sent).toEqual([["a", "b"]])
    expect(followed[0]!.ids).toEqual(["m-a", "m-b"])
    queue("bad", "m-bad")
    expect(followed.length).toBe(2)
    await expect(followed[1]!.request).rejects.toThrow("refused")
    expect(followed[1]!.ids).toEqual(["m-bad"])
  })
})

describe("Driver.unansweredRequests", () => {
  it.live("a failed request is logged with the messages it carried; closing waits for every one unanswered", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const logger = Logger.make(({ message }) => void logged.push(String(message)))
      let answer: (() => void) | undefined
      const answered = new Promise<void>((resolve) => answer = resolve)
      let closedAfterAnswer = false
      yield* Effect.scoped(Effect.gen(function*() {
        const follow = yield* Driver.unansweredRequests("acknowledgement")
        follow(Promise.reject(new Error("refused")), ["m-1", "m-2"])
        follow(answered.then(() => void (closedAfterAnswer = true)), ["m-3"])
        setTimeout(() => answer!(), 50)
      })).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      expect(closedAfterAnswer).toBe(true)
      yield* Effect.yieldNow()
      expect(logged.some((line) => line.includes("the acknowledgement of 2 messages (m-1, m-2) failed"))).toBe(true)
    }))
})

describe("Driver.supervisedConnection", () => {
  it.live("reconnects after a loss (retrying failed attempts), is degraded meanwhile and up again after", () =>
    Effect.gen(function*() {
      let attempts = 0
      let refuse = 0
      const losses = new Map<number, Deferred.Deferred<void>>()
      const closed: Array<number> = []
      const connection = yield* Driver.supervisedConnection({
        name: "test-connection",
        connect: Effect.suspend(() => {
          attempts++
          if (refuse > 0) {
            refuse--
            return Effect.fail(new FakeConnectionError({ reason: "refused" }))
          }
          const n = attempts
          return Effect.map(Deferred.make<void>(), (loss) => {
            losses.set(n, loss)
            return n
          })
        }),
        lost: (n) => Deferred.await(losses.get(n)!),
        close: (n) => Effect.sync(() => void closed.push(n)),
        waitFor: "2 seconds",
        timeout: () => new FakeConnectionError({ reason: "not back" }),
        backoffBase: "10 millis",
        backoffMax: "20 millis"
      })
      expect(yield* connection.current).toBe(1)
      refuse = 2
      yield* Deferred.succeed(losses.get(1)!, undefined)
      while (connection.live() === 1) yield* Effect.sleep("5 millis")
      // Two refused attempts, then the fourth attempt connects.
      expect(yield* connection.current).toBe(4)
      expect(attempts).toBe(4)
      expect((yield* Supervise.health).get("test-connection")).toBe("up")
      expect(connection.live()).toBe(4)
    }).pipe(Effect.scoped))

  it.live("a wait for a reconnection is bounded by waitFor; the first attempt's failure fails the start", () =>
    Effect.gen(function*() {
      const loss = yield* Deferred.make<void>()
      let up = true
      const connection = yield* Driver.supervisedConnection({
        name: "test-connection-down",
        connect: Effect.suspend(() => up ? Effect.succeed("c") : Effect.fail(new FakeConnectionError({ reason: "refused" }))),
        lost: () => Deferred.await(loss),
        close: () => Effect.void,
        waitFor: "200 millis",
        timeout: () => new FakeConnectionError({ reason: "not back" }),
        backoffBase: "10 millis",
        backoffMax: "20 millis"
      })
      up = false
      yield* Deferred.succeed(loss, undefined)
      yield* Effect.sleep("50 millis")
      const error = yield* Effect.flip(connection.current)
      expect(error.reason).toBe("not back")
      expect((yield* Supervise.health).get("test-connection-down")).toBe("degraded")
      const start = yield* Effect.exit(Effect.scoped(Driver.supervisedConnection({
        name: "never",
        connect: Effect.fail(new FakeConnectionError({ reason: "refused" })),
        lost: () => Effect.never,
        close: () => Effect.void,
        waitFor: "1 second",
        timeout: () => new FakeConnectionError({ reason: "not back" })
      })))
      expect(Exit.isFailure(start)).toBe(true)
    }).pipe(Effect.scoped))
})

describe("Driver.layer", () => {
  it.effect("provides the instrumented ports and the driver's own service from one instance", () =>
    Effect.gen(function*() {
      class Own extends Context.Tag("test/Own")<Own, Driver_>() {}
      interface Driver_ {
        readonly features: Subscriber["Type"]["features"]
        readonly publish: Publisher["Type"]["publish"]
        readonly subscribe: Subscriber["Type"]["subscribe"]
        readonly made: number
      }
      let made = 0
      const make = Effect.sync((): Driver_ => ({
        made: ++made,
        features: {
          orderedPerKey: false,
          delayedNack: false,
          visibilityTimeout: 0 as never,
          deadLetterTopic: false,
          consumerGroups: false,
          persistent: false
        },
        publish: () => Effect.void,
        subscribe: () => Stream.empty
      }))
      const context = yield* Layer.build(Driver.layer(make, { system: "test", service: Own }))
      expect(Context.get(context, Own).made).toBe(1)
      expect(Context.get(context, Subscriber).system).toBe("test")
      yield* Context.get(context, Publisher).publish("t", [])
      expect(made).toBe(1)
    }).pipe(Effect.scoped))
})

describe("Driver.chunked", () => {
  it("splits by count and by bytes, in order, and sends an oversized item alone", () => {
    const size = (s: string) => s.length
    expect(Driver.chunked(["a", "b", "c", "d", "e"], { maxItems: 2, maxBytes: 100, size })).toEqual([["a", "b"], ["c", "d"], ["e"]])
    expect(Driver.chunked(["aaa", "bb", "c", "dddd"], { maxItems: 10, maxBytes: 5, size })).toEqual([["aaa", "bb"], ["c", "dddd"]])
    expect(Driver.chunked(["x", "yyyyyyyy", "z"], { maxItems: 10, maxBytes: 4, size })).toEqual([["x"], ["yyyyyyyy"], ["z"]])
    expect(Driver.chunked([], { maxItems: 1, maxBytes: 1, size })).toEqual([])
  })
})

describe("Driver.retryTransient", () => {
  const counting = (failures: number, error: string) => {
    const state = { calls: 0 }
    const effect = Effect.suspend(() => (++state.calls <= failures ? Effect.fail(error) : Effect.succeed(state.calls)))
    return { state, effect }
  }

  it.live("answers as Effect.retry: success after transient failures, the same number of calls", () =>
    Effect.gen(function*() {
      const { effect, state } = counting(2, "transient")
      expect(yield* Driver.retryTransient(effect, { while: () => true, schedule: Schedule.spaced("1 millis") })).toBe(3)
      expect(state.calls).toBe(3)
    }))

  it.live("an error `while` refuses fails at once, called once", () =>
    Effect.gen(function*() {
      const { effect, state } = counting(5, "permanent")
      const result = yield* Effect.either(Driver.retryTransient(effect, { while: (e) => e !== "permanent", schedule: Schedule.spaced("1 millis") }))
      expect(result).toEqual(Either.left("permanent"))
      expect(state.calls).toBe(1)
    }))

  it.live("stops where the schedule stops, with the last error (recurs(3): four calls)", () =>
    Effect.gen(function*() {
      const { effect, state } = counting(100, "down")
      const result = yield* Effect.either(Driver.retryTransient(effect, { while: () => true, schedule: Schedule.recurs(3) }))
      expect(result).toEqual(Either.left("down"))
      expect(state.calls).toBe(4)
    }))
})
