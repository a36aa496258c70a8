/**
 * The order service: marks an order paid and appends `OrderPaid` to the outbox **in the same SQL
 * transaction**, so the event exists exactly when the state change does.
 *
 * The transaction also guards itself: the update only matches a *pending* order, so even a payment the
 * idempotency store no longer remembers (a lease that expired mid-run, a key past retention) cannot pay an
 * order twice or announce it twice.
 */
import { Envelope, Failure } from "@bulwark/core"
import { Outbox } from "@bulwark/outbox"
import { Migrations } from "@bulwark/sql"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Context, Data, Effect, Layer } from "effect"
import { OrderPaid, orderPaidEvent, orderPaidTopic, type Payment } from "./Domain.js"
import type { Tables } from "./Tables.js"

/** What marking an order paid did. */
export type MarkPaid =
  /** The order went from pending to paid; `OrderPaid` was appended with this sequence. */
  | { readonly _tag: "Paid"; readonly sequence: number }
  /** The order was already paid: nothing changed, nothing was appended. */
  | { readonly _tag: "AlreadyPaid" }

/** A payment for an order this shop never created. Permanent: no retry will create it. */
export class UnknownOrder extends Data.TaggedError("UnknownOrder")<{ readonly orderId: string }> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("permanent", "unknown")
  }
  override get message(): string {
    return `no order ${this.orderId}`
  }
}

/** The order store failed (database unreachable, transaction aborted). Transient. */
export class OrderStoreError extends Data.TaggedError("OrderStoreError")<{ readonly cause: unknown }> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("transient", "dependency")
  }
  override get message(): string {
    return `order store failed: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** The order service port. */
export class Orders extends Context.Tag("@bulwark-examples/payments/Orders")<Orders, {
  /** Marks the payment's order paid and appends `OrderPaid` (caused by `cause`) atomically. */
  readonly markPaid: (
    payment: Payment,
    cause: Envelope.Envelope<unknown>
  ) => Effect.Effect<MarkPaid, UnknownOrder | OrderStoreError>
}>() {}

/** An order the shop created before its payment arrives. */
export interface NewOrder {
  readonly orderId: string
  readonly customerId: string
  readonly amount: number
  readonly currency: string
}

const migrations = (tables: Tables): ReadonlyArray<Migrations.Migration> => [{
  id: 1,
  name: "orders",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${tables.orders} (
      id text PRIMARY KEY,
      customer_id text NOT NULL,
      amount integer NOT NULL,
      currency text NOT NULL,
      status text NOT NULL DEFAULT 'pending',
      payment_id text,
      paid_sequence bigint,
      paid_at timestamptz
    )`,
    `CREATE SEQUENCE IF NOT EXISTS ${tables.orderSequence}`
  ]
}]

/** Creates the orders table. */
export const migrate = (tables: Tables): Effect.Effect<void, SqlError, SqlClient.SqlClient> =>
  Effect.asVoid(Migrations.run(`payments:${tables.orders}`, migrations(tables)))

/** Creates orders (those that exist already are left alone). */
export const seed = (tables: Tables, orders: ReadonlyArray<NewOrder>): Effect.Effect<void, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    for (let i = 0; i < orders.length; i += 500) {
      const rows = orders.slice(i, i + 500).map((o) => ({ id: o.orderId, customer_id: o.customerId, amount: o.amount, currency: o.currency }))
      yield* sql`INSERT INTO ${sql(tables.orders)} ${sql.insert(rows)} ON CONFLICT (id) DO NOTHING`
    }
  })

/** Orders by status, as the database has them. */
export const countByStatus = (tables: Tables): Effect.Effect<Readonly<Record<string, number>>, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ status: string; n: number }>`SELECT status, count(*)::int AS n FROM ${sql(tables.orders)} GROUP BY status`
    return Object.fromEntries(rows.map((row) => [row.status, Number(row.n)]))
  })

/** The ids of the orders the database holds as paid. */
export const paidOrders = (tables: Tables): Effect.Effect<ReadonlyArray<string>, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ id: string }>`SELECT id FROM ${sql(tables.orders)} WHERE status = 'paid'`
    return rows.map((row) => row.id)
  })

const appendOrderPaid = Outbox.append(OrderPaid)

/** The order service over SQL; the outbox must use the same database. */
export const make = (tables: Tables): Effect.Effect<Context.Tag.Service<Orders>, SqlError, SqlClient.SqlClient | Outbox.Outbox> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const outbox = yield* Outbox.Outbox
    yield* migrate(tables)
    const markPaid = (payment: Payment, cause: Envelope.Envelope<unknown>) =>
      sql.withTransaction(Effect.gen(function*() {
        const updated = yield* sql<{ paid_sequence: number }>`
          UPDATE ${sql(tables.orders)}
          SET status = 'paid', payment_id = ${payment.paymentId}, paid_at = now(),
              paid_sequence = nextval(${tables.orderSequence}::regclass)
          WHERE id = ${payment.orderId} AND status = 'pending'
          RETURNING paid_sequence`
        if (updated.length === 0) {
          const existing = yield* sql`SELECT 1 FROM ${sql(tables.orders)} WHERE id = ${payment.orderId}`
          if (existing.length === 0) return yield* new UnknownOrder({ orderId: payment.orderId })
          return { _tag: "AlreadyPaid" } as const
        }
        const sequence = Number(updated[0]!.paid_sequence)
        const event = yield* orderPaidEvent(payment, sequence, cause)
        yield* appendOrderPaid(orderPaidTopic, [event])
        return { _tag: "Paid", sequence } as const
      })).pipe(
        Effect.provideService(Outbox.Outbox, outbox),
        Effect.catchAll((error): Effect.Effect<never, UnknownOrder | OrderStoreError> =>
          error._tag === "UnknownOrder" ? Effect.fail(error) : Effect.fail(new OrderStoreError({ cause: error })))
      )
    return { markPaid }
  })

/** Provides the SQL order service. */
export const layerSql = (tables: Tables): Layer.Layer<Orders, SqlError, SqlClient.SqlClient | Outbox.Outbox> =>
  Layer.effect(Orders, make(tables))
