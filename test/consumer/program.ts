/**
 * The program the consumer test (test/consumer.test.ts) compiles and runs with plain `node` in a fresh project
 * outside the repository, against the packed tarballs: orders are appended to the outbox in a PGlite
 * transaction (one order twice, as a retried request would), a relay publishes them to the in-memory transport,
 * and a consumer handles them idempotently through retry and a circuit breaker; a shipping call fails its first
 * attempt for every third order. It exits 0 when every order was shipped exactly once, 1 otherwise.
 *
 * Inside the repository it is type-checked by `npm run check` like any other file.
 */
import { Envelope, Failure, Handler } from "@bulwark/core"
import { Breaker } from "@bulwark/circuit-breaker"
import { Idempotent, MemoryIdempotencyStore } from "@bulwark/idempotency"
import { Outbox, Relay } from "@bulwark/outbox"
import { Retry } from "@bulwark/retry"
import { Database } from "@bulwark/sql"
import { Memory, Transport } from "@bulwark/transport"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Fiber, Layer, pipe, Schema } from "effect"

const OrderPaid = Schema.Struct({ orderId: Schema.String, amountCents: Schema.Int })
const topic = "orders.paid"
const orders = 12

const shipped = new Map<string, number>()
const attempts = new Map<string, number>()

// The carrier API fails the first attempt for every third order; retry absorbs it.
const ship: Handler.Handler<typeof OrderPaid.Type, Failure.TransientError> = (envelope) =>
  Effect.suspend(() => {
    const id = envelope.data.orderId
    const attempt = (attempts.get(id) ?? 0) + 1
    attempts.set(id, attempt)
    if (attempt === 1 && Number(id.split("-")[1]) % 3 === 0) {
      return Effect.fail(new Failure.TransientError({ category: "dependency", message: "carrier busy" }))
    }
    shipped.set(id, (shipped.get(id) ?? 0) + 1)
    return Effect.void
  })

const program = Effect.gen(function*() {
  const breaker = yield* Breaker.make("carrier-api")
  const handler = pipe(
    ship,
    Handler.timeout("2 seconds"),
    Breaker.middleware(breaker),
    Retry.middleware(Retry.policy({ maxAttempts: 3, maxDelay: "50 millis" })),
    Idempotent.idempotent({ key: "envelopeId" })
  )
  const consumer = yield* Effect.fork(Transport.consume(topic, handler, { schema: OrderPaid, concurrency: 4 }))

  // Append in the caller's transaction: the events commit with the business change, or not at all.
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL)`
  const append = Outbox.append(OrderPaid)
  for (let i = 1; i <= orders; i++) {
    const orderId = `order-${i}`
    const event = yield* Envelope.make({ type: "com.example.order.paid", source: "/orders", subject: orderId, data: { orderId, amountCents: 100 * i } })
    yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql`INSERT INTO orders (id, status) VALUES (${orderId}, 'paid')`
      // The first order's event is appended twice, as a retried request would: the consumer must ship it once.
      yield* append(topic, i === 1 ? [event, event] : [event])
    }))
  }

  // The relay publishes in the background; wait until the outbox is drained and the consumer is idle.
  const inspector = yield* Memory.MemoryTransportInspector
  yield* Effect.gen(function*() {
    while ((yield* Outbox.backlog) > 0 || inspector.pending(topic) > 0 || shipped.size < orders) yield* Effect.sleep("20 millis")
  }).pipe(Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error("the orders were not all shipped within 30 s") }))
  yield* Fiber.interrupt(consumer)

  const twice = [...shipped.values()].filter((n) => n > 1).length
  const retried = [...attempts.values()].filter((n) => n > 1).length
  console.log(`shipped ${shipped.size} of ${orders} orders, ${twice} twice, ${retried} after a retry; breaker ${yield* breaker.state}`)
  return shipped.size === orders && twice === 0 && retried > 0
})

const OutboxLive = Relay.layer({ pollInterval: "50 millis" }).pipe(
  Layer.provideMerge(Layer.mergeAll(Outbox.layer(), Memory.layer(), MemoryIdempotencyStore.layer())),
  Layer.provideMerge(Database.layerPglite())
)

Effect.runPromise(Effect.scoped(program).pipe(Effect.provide(OutboxLive))).then(
  (ok) => {
    console.log(ok ? "OK: every order shipped exactly once" : "FAILED")
    process.exitCode = ok ? 0 : 1
  },
  (error: unknown) => {
    console.error(error)
    process.exitCode = 1
  }
)
