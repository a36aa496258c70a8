import * as Reactivity from "@effect/experimental/Reactivity"
import * as Client from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import { PGlite, types } from "@electric-sql/pglite"
import { Effect, Scope, Stream } from "effect"
import type { Lease } from "../Transaction.js"


/** Opens PGlite and builds an `@effect/sql` client over it. Every statement holds the single connection's lock. */
export const make = (options: { readonly dataDir?: string | undefined }) =>
  Effect.gen(function*() {
    const db = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const instance = new PGlite({
            ...(options.dataDir !== undefined ? { dataDir: options.dataDir } : {}),
            // int8 as number, like the Postgres driver is configured, so the same row schemas work on both.
            parsers: { [types.INT8]: (value: string) => Number(value) }
          })
          await instance.waitReady
          return instance
        },
        catch: (cause) => new SqlError({ cause, message: `cannot open the embedded database at ${options.dataDir ?? "(memory)"}` })
      }),
      (instance) => Effect.promise(() => instance.close()).pipe(Effect.ignore)
    )
    // PGlite is one connection: a transaction must exclude every other statement until it ends.
    const lock = yield* Effect.makeSemaphore(1)

    const run = <A>(label: string, f: () => Promise<A>) =>
      Effect.tryPromise({ try: f, catch: (cause) => new SqlError({ cause, message: `${label} failed` }) })

    const query = (sql: string, params: ReadonlyArray<unknown>, rowMode: "object" | "array") =>
      run("query", () => db.query<any>(sql, params as Array<unknown>, { rowMode })).pipe(Effect.map((r) => r.rows))

    const connection: Connection = {
      execute: (sql, params, transformRows) =>
        Effect.map(query(sql, params, "object"), (rows) => transformRows ? transformRows(rows) : rows),
      executeRaw: (sql, params) => run("query", () => db.query(sql, params as Array<unknown>)),
      executeStream: (sql, params, transformRows) =>
        Stream.fromIterableEffect(
          Effect.map(query(sql, params, "object"), (rows) => transformRows ? transformRows(rows) : rows)
        ),
      executeValues: (sql, params) => query(sql, params, "array"),
      executeUnprepared: (sql, params, transformRows) =>
        params.length > 0
          ? Effect.map(query(sql, params, "object"), (rows) => transformRows ? transformRows(rows) : rows)
          : Effect.map(
            run("exec", () => db.exec(sql)),
            (results) => {
              const rows = (results[results.length - 1]?.rows ?? []) as ReadonlyArray<any>
              return transformRows ? transformRows(rows) : rows
            }
          )
    }

    const acquire: Effect.Effect<Connection, never, Scope.Scope> = Effect.as(
      Effect.acquireRelease(lock.take(1), () => lock.release(1)),
      connection
    )

    // A transaction's connection without a scope (see `Transaction.Lease`): the lock, held until it is given back.
    const leased = { connection, release: lock.release(1) }
    const lease: Effect.Effect<Lease> = Effect.as(lock.take(1), leased)

    const client = yield* Client.make({
      acquirer: acquire,
      transactionAcquirer: acquire,
      compiler: PgClient.makeCompiler(),
      spanAttributes: [["db.system.name", "postgresql"], ["db.namespace", "pglite"]]
    })

    const listen = (channel: string): Stream.Stream<string, SqlError> =>
      Stream.asyncPush<string, SqlError>((emit) =>
        Effect.acquireRelease(
          lock.withPermits(1)(run("listen", () => db.listen(channel, (payload) => emit.single(payload)))),
          (unsubscribe) => Effect.promise(() => unsubscribe()).pipe(Effect.ignore)
        ))

    return { client, listen, lease }
  })


/** Reactivity is required by `@effect/sql`'s client; provided here so callers need not know. */
export const reactivity = Reactivity.layer
