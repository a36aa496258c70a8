import { Failure } from "@bulwark/core"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { describe, expect, it } from "@effect/vitest"
import type { Connection } from "@effect/sql/SqlConnection"
import { Cause, Context, Deferred, Effect, Exit, Fiber, Option } from "effect"
import * as Transaction from "../src/Transaction.js"

// A connection the server dropped, as node-postgres reports it (no code) and as the socket does (a code).
const terminated = () => new SqlError({ cause: new Error("Connection terminated unexpectedly"), message: "Failed to execute statement" })
const reset = () => new SqlError({ cause: Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }), message: "Failed to execute statement" })

class Tx extends Context.Tag("test/Tx")<Tx, readonly [conn: string, counter: number]>() {}

/** `@effect/sql`'s own `withTransaction` over a fake connection whose COMMIT / ROLLBACK fail as asked. */
const fake = (options: { readonly commit?: () => SqlError | undefined; readonly rollback?: () => SqlError | undefined }) => {
  const log: Array<string> = []
  const step = (name: string, error?: () => SqlError | undefined) =>
    Effect.suspend(() => {
      log.push(name)
      const failure = error?.()
      return failure === undefined ? Effect.void : Effect.fail(failure)
    })
  const withTransaction = SqlClient.makeWithTransaction({
    transactionTag: Tx,
    spanAttributes: [],
    acquireConnection: Effect.succeed([undefined, "conn"] as const),
    begin: () => step("BEGIN"),
    savepoint: () => step("SAVEPOINT"),
    commit: () => step("COMMIT", options.commit),
    rollback: () => step("ROLLBACK", options.rollback),
    rollbackSavepoint: () => step("ROLLBACK TO SAVEPOINT")
  })
  return { log, withTransaction }
}

describe("Transaction", () => {
  it.effect("@effect/sql alone turns a COMMIT on a lost connection into a defect (why this module exists)", () =>
    Effect.gen(function*() {
      const { withTransaction } = fake({ commit: terminated })
      const exit = yield* Effect.exit(withTransaction(Effect.succeed(1)))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
    }))

  it.effect("a COMMIT on a lost connection is a typed, transient CommitUnknown", () =>
    Effect.gen(function*() {
      const { log, withTransaction } = fake({ commit: terminated })
      const error = yield* Effect.flip(Transaction.transactional(withTransaction)(Effect.succeed(1)))
      expect(error).toBeInstanceOf(Transaction.CommitUnknown)
      expect(error).toBeInstanceOf(SqlError)
      expect(error._tag).toBe("SqlError")
      expect(error.message).toMatch(/may or may not have committed/)
      expect(yield* Failure.classify(error)).toEqual({ classification: "transient", category: "dependency" })
      expect(log).toEqual(["BEGIN", "COMMIT"])
    }))

  it.effect("a COMMIT the server refuses (not a lost connection) is that SqlError: nothing committed", () =>
    Effect.gen(function*() {
      const refused = new SqlError({ cause: Object.assign(new Error("could not serialize access"), { code: "40001" }) })
      const { withTransaction } = fake({ commit: () => refused })
      const error = yield* Effect.flip(Transaction.transactional(withTransaction)(Effect.succeed(1)))
      expect(error).toBe(refused)
      expect(Transaction.isCommitUnknown(error)).toBe(false)
    }))

  it.effect("a failed ROLLBACK keeps the body's own failure, with a lost connection refined to ConnectionLost", () =>
    Effect.gen(function*() {
      const { log, withTransaction } = fake({ rollback: reset })
      const safe = Transaction.transactional(withTransaction)
      const mine = yield* Effect.flip(safe(Effect.fail("business rule" as const)))
      expect(mine).toBe("business rule")
      const lost = yield* Effect.flip(safe(Effect.fail(terminated())))
      expect(lost).toBeInstanceOf(Transaction.ConnectionLost)
      expect(yield* Failure.classify(lost)).toEqual({ classification: "transient", category: "dependency" })
      expect(log).toEqual(["BEGIN", "ROLLBACK", "BEGIN", "ROLLBACK"])
    }))

  it.effect("a defect of the body itself stays a defect; an interruption stays an interruption", () =>
    Effect.gen(function*() {
      const { withTransaction } = fake({})
      const safe = Transaction.transactional(withTransaction)
      const died = yield* Effect.exit(safe(Effect.die("bug")))
      expect(Exit.isFailure(died) && Option.getOrUndefined(Cause.dieOption(died.cause))).toBe("bug")
      const interrupted = yield* Effect.exit(safe(Effect.interrupt))
      expect(Exit.isFailure(interrupted) && Cause.isInterruptedOnly(interrupted.cause)).toBe(true)
    }))

  it.effect("Effect.retry around the transaction retries a lost COMMIT (it was a defect before)", () =>
    Effect.gen(function*() {
      let commits = 0
      const { log, withTransaction } = fake({ commit: () => commits++ < 2 ? terminated() : undefined })
      const result = yield* Transaction.transactional(withTransaction)(Effect.succeed("ok")).pipe(Effect.retry({ times: 3 }))
      expect(result).toBe("ok")
      expect(log).toEqual(["BEGIN", "COMMIT", "BEGIN", "COMMIT", "BEGIN", "COMMIT"])
    }))

  describe("an outermost transaction over a layer's direct connection (lease)", () => {
    /** A client whose only transaction path is the lease: its `reserve` and own `withTransaction` must not run. */
    const leased = (options: {
      readonly take?: () => SqlError | undefined
      readonly begin?: () => SqlError | undefined
      readonly commit?: () => SqlError | undefined
    } = {}) => {
      const log: Array<string> = []
      const statement = (text: string, error?: () => SqlError | undefined) =>
        Effect.suspend(() => {
          log.push(text)
          const failure = error?.()
          return failure === undefined ? Effect.succeed([]) : Effect.fail(failure)
        })
      const unused = Effect.die("not used by the transaction")
      const connection: Connection = {
        execute: () => unused,
        executeRaw: () => unused,
        executeStream: () => Effect.die("not used by the transaction") as never,
        executeValues: () => unused,
        executeUnprepared: (text) =>
          statement(text, text === "BEGIN" ? options.begin : text === "COMMIT" ? options.commit : undefined)
      }
      const lease = Effect.suspend(() => {
        log.push("take")
        const failure = options.take?.()
        return failure === undefined
          ? Effect.succeed({ connection, release: Effect.sync(() => log.push("release")) })
          : Effect.fail(failure)
      })
      const client = Transaction.patchClient(
        { withTransaction: () => unused, reserve: unused } as unknown as SqlClient.SqlClient,
        lease
      )
      return { client, connection, log }
    }

    it.effect("takes the lease, runs BEGIN, the body on its connection and COMMIT, and gives it back", () =>
      Effect.gen(function*() {
        const { client, connection, log } = leased()
        const seen = yield* client.withTransaction(Effect.serviceOption(SqlClient.TransactionConnection))
        expect(Option.map(seen, ([c]) => c)).toEqual(Option.some(connection))
        expect(log).toEqual(["take", "BEGIN", "COMMIT", "release"])
        expect(Option.isNone(yield* Effect.serviceOption(SqlClient.TransactionConnection))).toBe(true)
      }))

    it.effect("a failed or interrupted body is rolled back and the connection given back, once", () =>
      Effect.gen(function*() {
        const { client, log } = leased()
        expect(yield* Effect.flip(client.withTransaction(Effect.fail("refused" as const)))).toBe("refused")
        expect(log).toEqual(["take", "BEGIN", "ROLLBACK", "release"])
        log.length = 0
        const started = yield* Deferred.make<void>()
        const running = yield* Effect.fork(client.withTransaction(Effect.zipRight(Deferred.succeed(started, undefined), Effect.never)))
        yield* Deferred.await(started)
        const exit = yield* Fiber.interrupt(running)
        expect(Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)).toBe(true)
        expect(log).toEqual(["take", "BEGIN", "ROLLBACK", "release"])
        expect(Option.isNone(yield* Effect.serviceOption(SqlClient.TransactionConnection))).toBe(true)
      }))

    it.effect("lost connections keep their typed outcomes: taking or BEGIN is ConnectionLost, COMMIT is CommitUnknown", () =>
      Effect.gen(function*() {
        const notTaken = leased({ take: terminated })
        expect(yield* Effect.flip(notTaken.client.withTransaction(Effect.succeed(1)))).toBeInstanceOf(Transaction.ConnectionLost)
        expect(notTaken.log).toEqual(["take"])
        const noBegin = leased({ begin: reset })
        expect(yield* Effect.flip(noBegin.client.withTransaction(Effect.succeed(1)))).toBeInstanceOf(Transaction.ConnectionLost)
        expect(noBegin.log).toEqual(["take", "BEGIN", "ROLLBACK", "release"])
        const noCommit = leased({ commit: terminated })
        expect(yield* Effect.flip(noCommit.client.withTransaction(Effect.succeed(1)))).toBeInstanceOf(Transaction.CommitUnknown)
        expect(noCommit.log).toEqual(["take", "BEGIN", "COMMIT", "release"])
      }))
  })

  it("recognises lost connections by socket code, SQLSTATE and node-postgres's messages, not other errors", () => {
    expect(Transaction.isConnectionLoss(reset())).toBe(true)
    expect(Transaction.isConnectionLoss(terminated())).toBe(true)
    expect(Transaction.isConnectionLoss(new SqlError({ cause: Object.assign(new Error("x"), { code: "57P01" }) }))).toBe(true)
    expect(Transaction.isConnectionLoss(new SqlError({ cause: Object.assign(new Error("x"), { code: "08006" }) }))).toBe(true)
    expect(Transaction.isConnectionLoss(new SqlError({ cause: Object.assign(new Error("dup"), { code: "23505" }) }))).toBe(false)
    expect(Transaction.isConnectionLoss(new SqlError({ cause: new Error('relation "x" does not exist') }))).toBe(false)
  })
})
