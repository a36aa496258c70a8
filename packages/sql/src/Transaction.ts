/**
 * One error model for lost connections: a lost connection is a typed, transient `SqlError`, never a defect.
 *
 * `@effect/sql`'s `withTransaction` turns a failed `COMMIT` or `ROLLBACK` into a defect (`Effect.orDie`), so a
 * database restart in the middle of a transaction used to kill the fiber: `Effect.retry` never saw it and a
 * background loop died. {@link withTransaction} (and the `sql.withTransaction` of every `@bulwark/sql` layer,
 * which is this one) answers instead:
 *
 * - {@link CommitUnknown} when the connection was lost while committing. **The transaction may or may not have
 *   committed**: the server may have made it durable before the answer was lost. Retrying is safe only for
 *   work that is idempotent as a whole; every Bulwark path is (outbox rows are deduplicated downstream by
 *   message id, the inbox and the idempotency store find the first attempt's mark, the Postgres transport's
 *   consumers see at most a duplicate delivery).
 * - {@link ConnectionLost} when the connection was lost or refused anywhere else (acquiring it, `BEGIN`, a
 *   statement, `ROLLBACK`): the transaction did not commit; retrying is safe.
 * - the body's own failure when only the `ROLLBACK` failed (the transaction did not commit either way).
 * - a `SqlError` when the server refused the `COMMIT` (e.g. a serialization failure): nothing committed.
 *
 * Both errors are subclasses of `SqlError` (so every signature and `catchTag("SqlError")` stays as it was)
 * and classify themselves with `@bulwark/core` `Failure` as transient `dependency`.
 */
import { Failure, Telemetry } from "@bulwark/core"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import type { Connection } from "@effect/sql/SqlConnection"
import { Cause, Context, Effect, Exit, FiberRef, Option, Predicate, Scope, Tracer } from "effect"

/** The connection to the database was lost or could not be opened; nothing was committed. Transient `dependency`. */
export class ConnectionLost extends SqlError implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("transient", "dependency")
  }
}

/**
 * The connection was lost while committing: the transaction may or may not have committed. Transient
 * `dependency`: retry only work that is idempotent as a whole (every Bulwark path is).
 */
export class CommitUnknown extends SqlError implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("transient", "dependency")
  }
}

/** Whether an error is a {@link ConnectionLost}. */
export const isConnectionLost = (u: unknown): u is ConnectionLost => u instanceof ConnectionLost

/** Whether an error is a {@link CommitUnknown}. */
export const isCommitUnknown = (u: unknown): u is CommitUnknown => u instanceof CommitUnknown

// Socket-level codes of a connection that is gone or cannot be opened.
const socketCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTCONN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN"
])
// SQLSTATE class 08 (connection exception), and 57P01-57P03: the server is shutting down, crashed or starting.
const sqlStates = /^(?:08[0-9A-Z]{3}|57P0[1-3])$/
// What node-postgres and the pool say when the socket ends under them (they give no code).
const lostMessages =
  /connection terminated|terminating connection|server closed the connection|connection (?:is )?(?:closed|ended|lost)|encountered a connection error|not queryable|timeout exceeded when trying to connect|connection timed out|the database system is (?:starting up|shutting down|in recovery mode)|cannot use a pool after calling end|query read timeout/i

/**
 * Whether an error (or any error in its `cause` chain) says the connection to the database is lost or cannot
 * be opened: a socket code, SQLSTATE class 08 or 57P01–57P03, or node-postgres's "Connection terminated".
 */
export const isConnectionLoss = (error: unknown): boolean => {
  let current: unknown = error
  for (let depth = 0; depth < 8 && Predicate.isObject(current); depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === "string" && (socketCodes.has(code) || sqlStates.test(code))) return true
    const message = (current as { message?: unknown }).message
    if (typeof message === "string" && lostMessages.test(message)) return true
    current = (current as { cause?: unknown }).cause
  }
  return false
}

const describe = (error: unknown) => {
  const cause = Predicate.isObject(error) && "cause" in error ? (error as { cause?: unknown }).cause : undefined
  return cause instanceof Error ? cause.message : Predicate.isObject(error) && "message" in error ? String(error.message) : String(error)
}

/** A plain `SqlError` that is a lost connection becomes a {@link ConnectionLost}; anything else is kept. */
export const refine = <E>(error: E): E =>
  error instanceof SqlError && !(error instanceof ConnectionLost) && !(error instanceof CommitUnknown) &&
    isConnectionLoss(error)
    ? new ConnectionLost({ cause: error.cause ?? error, message: `connection to the database lost: ${describe(error)}` }) as E
    : error

const sqlDefect = (cause: Cause.Cause<unknown>): Option.Option<SqlError> =>
  Option.fromNullable(Array.from(Cause.defects(cause)).find((defect): defect is SqlError => defect instanceof SqlError))

/**
 * Decorates a client's `withTransaction` so that a failed `COMMIT` or `ROLLBACK` is a typed failure (see the
 * module's documentation) and a lost connection is a {@link ConnectionLost}.
 */
export const transactional = (
  withTransaction: SqlClient.SqlClient["withTransaction"]
): SqlClient.SqlClient["withTransaction"] =>
<R, E, A>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> =>
  Effect.suspend(() => {
    // The body's own outcome tells a failed COMMIT (the body succeeded) from a failed ROLLBACK (it did not).
    let body: Exit.Exit<A, E> | undefined
    return withTransaction(Effect.onExit(effect, (exit) => Effect.sync(() => body = exit))).pipe(
      Effect.catchAllCause((cause): Effect.Effect<never, E | SqlError> => {
        const defect = sqlDefect(cause)
        if (Option.isNone(defect)) {
          return Effect.failCause(Cause.map(cause, refine))
        }
        const error = defect.value
        if (body !== undefined && Exit.isSuccess(body)) {
          return Effect.fail(
            isConnectionLoss(error)
              ? new CommitUnknown({
                cause: error.cause ?? error,
                message: `connection lost during COMMIT: the transaction may or may not have committed (${describe(error)})`
              })
              : error
          )
        }
        // ROLLBACK failed: nothing committed; the body's own failure (or interruption) is the answer.
        if (body !== undefined && Exit.isFailure(body)) return Effect.failCause(Cause.map(body.cause, refine))
        return Effect.fail(
          new ConnectionLost({ cause: error.cause ?? error, message: `connection to the database lost: ${describe(error)}` })
        )
      })
    )
  })

const patched = Symbol.for("@bulwark/sql/Transaction/patched")

/**
 * Whether spans made by `fiber` go anywhere: a tracer other than Effect's native one is installed (e.g.
 * `@bulwark/tracing`'s `Otel` layer, or a test's recording tracer) and tracing is enabled.
 */
export const tracingOn = (fiber: { readonly currentTracer: Tracer.Tracer; getFiberRef<A>(ref: FiberRef.FiberRef<A>): A }): boolean =>
  !Telemetry.isNativeTracer(fiber.currentTracer) && fiber.getFiberRef(FiberRef.currentTracerEnabled)

const begin = (connection: Connection) => connection.executeUnprepared("BEGIN", [], undefined)
const commit = (connection: Connection) => connection.executeUnprepared("COMMIT", [], undefined)
const rollback = (connection: Connection) => connection.executeUnprepared("ROLLBACK", [], undefined)

/**
 * A connection held for one transaction, and how to give it back. No scope: the transaction that took it gives
 * it back on every exit, so the per-transaction `Scope` (its context switch, its finalizer list and its close)
 * is not paid for.
 */
export interface Lease {
  readonly connection: Connection
  readonly release: Effect.Effect<void>
}

/** A {@link Lease} over a client's scoped `reserve`, for a client whose layer offers no direct one. */
const leaseOfReserve = (reserve: Effect.Effect<Connection, SqlError, Scope.Scope>): Effect.Effect<Lease, SqlError> =>
  Effect.flatMap(Scope.make(), (scope) =>
    Effect.matchCauseEffect(Scope.extend(reserve, scope), {
      onFailure: (cause) => Effect.zipRight(Scope.close(scope, Exit.failCause(cause)), Effect.failCause(cause)),
      onSuccess: (connection) => Effect.succeed({ connection, release: Scope.close(scope, Exit.void) })
    }))

/**
 * An outermost transaction as `@effect/sql`'s `withTransaction` runs it (a connection taken, `BEGIN`, the
 * body with the connection as its `TransactionConnection`, `COMMIT` or `ROLLBACK`, the connection given
 * back), with the outcomes of {@link transactional}, in a few steps: no `sql.transaction` span (this path runs
 * only when spans are recorded nowhere) and no defect to translate back. A transaction is one business
 * operation, so what it costs on top of its statements counts against every write an application makes.
 *
 * The connection is a {@link Lease} taken uninterruptibly (as `@effect/sql` reserves it) and given back after
 * the `COMMIT` or `ROLLBACK` whatever the exit, interruption of the body included. The fiber's context is
 * switched by two `FiberRef.set`s (with the connection for the body, back to the caller's at the end) where
 * `Effect.locally` would copy the fiber's refs and add its own acquire/release steps.
 */
const thinTransaction = <A, E, R>(
  lease: Effect.Effect<Lease, SqlError>,
  effect: Effect.Effect<A, E, R>,
  context: Context.Context<never>
): Effect.Effect<A, E | SqlError, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.matchCauseEffect(lease, {
      onFailure: (cause) => Effect.failCause(Cause.map(cause, refine)),
      onSuccess: ({ connection, release }) =>
        Effect.ensuring(
          Effect.flatMap(
            Effect.exit(Effect.zipRight(
              Effect.mapError(begin(connection), refine),
              Effect.zipRight(
                FiberRef.set(
                  FiberRef.currentContext,
                  Context.add(context, SqlClient.TransactionConnection, [connection, 0] as const)
                ),
                restore(effect)
              )
            )),
            (body): Effect.Effect<A, E | SqlError> =>
              Exit.isSuccess(body)
                ? Effect.matchEffect(commit(connection), {
                  onFailure: (error) =>
                    Effect.fail(
                      isConnectionLoss(error)
                        ? new CommitUnknown({
                          cause: error.cause ?? error,
                          message: `connection lost during COMMIT: the transaction may or may not have committed (${describe(error)})`
                        })
                        : error
                    ),
                  onSuccess: () => body
                })
                // Whether the ROLLBACK worked or not, nothing committed: the body's own failure is the answer.
                : Effect.zipRight(Effect.ignore(rollback(connection)), Effect.failCause(Cause.map(body.cause, refine)))
          ),
          // The body's context is dropped and the connection given back, on every exit.
          Effect.ensuring(release, FiberRef.set(FiberRef.currentContext, context))
        )
    })
  )

/**
 * Makes `client.withTransaction` {@link transactional}, in place (every tag holding this client sees it);
 * a client already patched is left as it is. The `@bulwark/sql` layers do this to the client they provide.
 *
 * An outermost transaction while spans are recorded nowhere runs on a thinner path with the same outcomes
 * (see `thinTransaction`); a nested one (a savepoint) and every transaction while tracing is on run through
 * `@effect/sql`'s own, so its `sql.transaction` span is there whenever someone can see it. `lease` is how that
 * thinner path takes a connection (the layer's direct one); without it, the client's scoped `reserve`.
 */
export const patchClient = <C extends SqlClient.SqlClient>(client: C, lease?: Effect.Effect<Lease, SqlError>): C => {
  if ((client as unknown as Record<symbol, unknown>)[patched] !== true) {
    const traced = transactional(client.withTransaction)
    const take = lease ?? leaseOfReserve(client.reserve)
    ;(client as { withTransaction: SqlClient.SqlClient["withTransaction"] }).withTransaction = <R, E, A>(
      effect: Effect.Effect<A, E, R>
    ): Effect.Effect<A, E | SqlError, R> =>
      Effect.withFiberRuntime((fiber) => {
        const context = fiber.currentContext
        return Context.getOption(context, SqlClient.TransactionConnection)._tag === "Some" || tracingOn(fiber)
          ? traced(effect)
          : thinTransaction(take, effect, context)
      })
    ;(client as unknown as Record<symbol, unknown>)[patched] = true
  }
  return client
}

/**
 * `sql.withTransaction` over the client in context, with a lost connection (also during `COMMIT` or
 * `ROLLBACK`) as a typed, transient failure instead of a defect: {@link CommitUnknown} or {@link ConnectionLost}.
 */
export const withTransaction = <A, E, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E | SqlError, R | SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => transactional(sql.withTransaction)(effect))
