/**
 * One SQL dialect for two engines: the embedded default (PGlite, Postgres compiled to WASM, with a data
 * directory) and a real PostgreSQL server. Every Bulwark SQL driver is written once against
 * `@effect/sql`'s `SqlClient` and runs on both.
 *
 * Both layers also provide {@link Database}: LISTEN/NOTIFY, which the outbox relay and the Postgres
 * transport use to wake without polling.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import { Config, Context, Data, Deferred, Duration, Effect, FiberId, Layer, Option, Schedule, Scope, Stream } from "effect"
import { existsSync, mkdirSync } from "node:fs"
import { join as joinPath, resolve as resolvePath } from "node:path"
import type pg from "pg"
import { isConnectionLoss, type Lease, patchClient } from "./Transaction.js"

// The engines' client libraries (pg, pg-types, PGlite) are imported when a layer is built, not when this module
// is: the outbox, the SQL stores and the tracing decorators import this module for the `Database` tag alone.
const loadPglite = Effect.promise(() => import("./internal/pglite.js"))
const loadPg = Effect.promise(() =>
  Promise.all([import("@effect/sql-pg/PgClient"), import("pg-types"), import("pg")]).then(([PgClient, pgTypes, pgModule]) => ({
    PgClient,
    pgTypes: pgTypes.default,
    pg: pgModule.default
  }))
)

/** Engine-level services beyond plain SQL: notifications, and which engine this is. */
export class Database extends Context.Tag("@bulwark/sql/Database")<Database, {
  readonly engine: "pglite" | "postgres"
  /** Where the data lives, for messages (`postgres://…` without password, or the data directory). */
  readonly location: string
  /** Notifications on `channel`, as `LISTEN` receives them. */
  readonly listen: (channel: string) => Stream.Stream<string, SqlError>
  /** `NOTIFY channel, payload` (delivered at commit when called inside a transaction). */
  readonly notify: (channel: string, payload: string) => Effect.Effect<void, SqlError>
}>() {}

/** A database URL that cannot be used. */
export class DatabaseUrlError extends Data.TaggedError("DatabaseUrlError")<{
  readonly url: string
  readonly reason: string
}> {
  override get message(): string {
    return `unusable database URL ${redactUrl(this.url)}: ${this.reason}`
  }
}

const redactUrl = (url: string) => url.replace(/\/\/([^:@/]+):[^@/]*@/, "//$1:***@")

// pg_notify through the SQL client joins the caller's transaction, so the notification leaves at commit.
const notifyWith = (sql: SqlClient.SqlClient) => (channel: string, payload: string) =>
  Effect.asVoid(sql`SELECT pg_notify(${channel}, ${payload})`)

/** The embedded default's data directory when none is configured. */
export const defaultDataDir = ".bulwark/pglite"

/** The embedded PGlite database; in memory when `dataDir` is omitted. */
export const layerPglite = (options: { readonly dataDir?: string } = {}): Layer.Layer<
  SqlClient.SqlClient | Database,
  SqlError
> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      if (options.dataDir !== undefined) mkdirSync(options.dataDir, { recursive: true })
      const Pglite = yield* loadPglite
      const { client, lease, listen } = yield* Pglite.make(options)
      patchClient(client, lease)
      return Context.make(SqlClient.SqlClient, client).pipe(
        Context.add(Database, { engine: "pglite", location: options.dataDir ?? "(memory)", listen, notify: notifyWith(client) })
      )
    })
  ).pipe(Layer.provide(Reactivity.layer))

/** Checks a `postgres://` URL before any connection is tried. */
export const parseUrl = (url: string): Effect.Effect<URL, DatabaseUrlError> =>
  Effect.try({
    try: () => new URL(url),
    catch: () => new DatabaseUrlError({ url, reason: "not a URL" })
  }).pipe(
    Effect.filterOrFail(
      (parsed) => parsed.protocol === "postgres:" || parsed.protocol === "postgresql:",
      (parsed) => new DatabaseUrlError({ url, reason: `expected postgres:// or postgresql://, got ${parsed.protocol}//` })
    )
  )

/**
 * LISTEN on a real server: one connection shared by every LISTEN of the layer, owned by the layer's scope.
 *
 * `PgClient.listen` keeps that connection in an `RcRef`; a stream interrupted while the connection is still
 * being opened leaves it open for good (the half-acquired resource is never released), and the open socket
 * keeps a short-lived process alive: `bulwark dlq replay` with nothing to publish never exited. Here the
 * connection is opened by a fiber of the layer's scope (an interrupted listener only stops waiting for it)
 * and closed when that scope closes, whenever it was opened. A lost connection fails the streams listening
 * on it (their callers retry) and the next listener opens a new one.
 */
// node-postgres queues a statement sent while another runs on the same client, a use pg 9 removes: the
// listeners sharing one connection send their LISTEN and UNLISTEN one after another through this chain.
const tails = new WeakMap<pg.Client, Promise<unknown>>()
const serially = (client: pg.Client, text: string): Promise<unknown> => {
  const run = (tails.get(client) ?? Promise.resolve()).then(() => client.query(text))
  tails.set(client, run.catch(() => undefined))
  return run
}

// Listeners of one channel share the connection's LISTEN: each sends its own (a no-op when the channel is
// already listened to, and it returns once the channel is), but only the last one to go sends UNLISTEN, which
// would otherwise silence every other listener of the channel.
const listenersOf = new WeakMap<pg.Client, Map<string, number>>()
const countListeners = (client: pg.Client, channel: string, delta: 1 | -1): number => {
  let channels = listenersOf.get(client)
  if (channels === undefined) listenersOf.set(client, channels = new Map())
  const n = (channels.get(channel) ?? 0) + delta
  if (n <= 0) channels.delete(channel)
  else channels.set(channel, n)
  return n
}

const makeListener = (url: string, Client: typeof pg.Client) =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    let current: Deferred.Deferred<pg.Client, SqlError> | undefined

    const open = Effect.tryPromise({
      try: async () => {
        const client = new Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
        // Without a listener an 'error' event would crash the process; listeners are told by 'end'.
        client.on("error", () => undefined)
        try {
          await client.connect()
        } catch (error) {
          await client.end().catch(() => undefined)
          throw error
        }
        return client
      },
      catch: (cause) => new SqlError({ cause, message: "Failed to acquire connection for listen" })
    }).pipe(
      Effect.tap((client) =>
        Scope.addFinalizer(
          scope,
          // A finalizer runs uninterruptibly and `timeout` waits for what it cannot interrupt: the end is made
          // interruptible, or a hung server would hold the scope's close for ever.
          Effect.promise(() => client.end().catch(() => undefined)).pipe(Effect.interruptible, Effect.timeoutOption("1 second"))
        )
      ),
      // Opening and handing the connection to the scope's finalizer are one step: an interruption between
      // them would leak the socket (and a finalizer added to a closed scope runs at once).
      Effect.uninterruptible
    )

    const connection: Effect.Effect<pg.Client, SqlError> = Effect.suspend(() => {
      if (current !== undefined) return Deferred.await(current)
      const deferred = Deferred.unsafeMake<pg.Client, SqlError>(FiberId.none)
      current = deferred
      const forget = () => {
        if (current === deferred) current = undefined
      }
      return open.pipe(
        Effect.tap((client) => Effect.sync(() => client.once("end", forget))),
        Effect.tapError(() => Effect.sync(forget)),
        Effect.intoDeferred(deferred),
        Effect.forkIn(scope),
        Effect.zipRight(Deferred.await(deferred))
      )
    })

    return (channel: string): Stream.Stream<string, SqlError> =>
      Stream.asyncPush<string, SqlError>((emit) =>
        Effect.gen(function*() {
          const client = yield* connection
          const onNotification = (message: pg.Notification) => {
            if (message.channel === channel && message.payload) emit.single(message.payload)
          }
          const onEnd = () => emit.fail(new SqlError({ cause: "connection ended", message: "the LISTEN connection was lost" }))
          countListeners(client, channel, 1)
          yield* Effect.addFinalizer(() =>
            Effect.promise(() => {
              client.off("notification", onNotification).off("end", onEnd)
              return countListeners(client, channel, -1) > 0
                ? Promise.resolve()
                : serially(client, `UNLISTEN ${client.escapeIdentifier(channel)}`).catch(() => undefined)
            }).pipe(Effect.interruptible, Effect.timeoutOption("1 second"))
          )
          client.on("notification", onNotification).on("end", onEnd)
          yield* Effect.tryPromise({
            try: () => serially(client, `LISTEN ${client.escapeIdentifier(channel)}`),
            catch: (cause) => new SqlError({ cause, message: "Failed to listen" })
          })
        })
      )
  })

/**
 * Retries the first connection while the server is unreachable (restarting, not up yet), with jittered
 * exponential backoff capped at 5 s, for at most `connectRetry`; one warning says so. Other errors fail at once.
 */
const retryStartup = <A, R>(
  layer: Layer.Layer<A, SqlError, R>,
  location: string,
  connectRetry: Duration.Duration
): Layer.Layer<A, SqlError, R> => {
  if (Duration.isZero(connectRetry)) return layer
  let warned = false
  const schedule = Schedule.exponential("100 millis").pipe(
    Schedule.either(Schedule.spaced("5 seconds")),
    Schedule.jittered,
    Schedule.upTo(connectRetry),
    Schedule.whileInput((error: SqlError) => isConnectionLoss(error)),
    Schedule.tapInput((error: SqlError) =>
      warned ? Effect.void : Effect.sync(() => warned = true).pipe(
        Effect.zipRight(Effect.logWarning(
          `@bulwark/sql: ${location} is unreachable; retrying for up to ${Duration.format(connectRetry)}`,
          error
        ))
      )
    )
  )
  return Layer.retry(layer, schedule)
}

/**
 * The pool of {@link layerPostgres}, checked with one `SELECT 1` (within 5 s) before it is handed over. With a
 * query timeout, node-postgres fails a statement that gets no answer in time but keeps its connection, which
 * would go back to the pool with the statement still pending on it (a `BEGIN` answered later would leave the
 * next user inside a stale transaction): such a connection is closed instead, so the pool drops it and the
 * server rolls back whatever it held.
 */
const acquirePool = (
  pgModule: typeof pg,
  config: pg.PoolConfig,
  queryTimeout: number
): Effect.Effect<pg.Pool, SqlError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const pool = new pgModule.Pool(queryTimeout > 0 ? { ...config, query_timeout: queryTimeout } : config)
      pool.on("error", () => undefined)
      if (queryTimeout > 0) pool.on("connect", closeOnQueryTimeout)
      return pool
    }),
    (pool) => Effect.promise(() => pool.end().catch(() => undefined)).pipe(Effect.interruptible, Effect.timeoutOption("1 second"))
  ).pipe(
    Effect.tap((pool) =>
      Effect.tryPromise({
        try: () => pool.query("SELECT 1"),
        catch: (cause) => new SqlError({ cause, message: "PgClient: Failed to connect" })
      }).pipe(
        Effect.interruptible,
        Effect.timeoutFail({
          duration: "5 seconds",
          onTimeout: () => new SqlError({ cause: new Error("Connection timed out"), message: "PgClient: Connection timed out" })
        })
      )
    )
  )

// node-postgres reports a statement past `query_timeout` with this message, through the statement's callback only.
const queryTimedOut = (error: unknown) => error instanceof Error && error.message === "Query read timeout"

const closeOnQueryTimeout = (client: pg.PoolClient) => {
  const query = client.query
  ;(client as { query: unknown }).query = function(this: pg.PoolClient, ...args: Array<unknown>) {
    const last = args.length - 1
    const callback = args[last]
    if (typeof callback === "function") {
      args[last] = (error: unknown, result: unknown) => {
        // `end` marks the client as ending at once (a hung statement's socket is destroyed), so the pool drops it
        // when it is released next, even within this turn; a destroyed socket alone is noticed a turn later.
        if (queryTimedOut(error)) client.end().catch(() => undefined)
        return (callback as (error: unknown, result: unknown) => unknown)(error, result)
      }
    }
    return (query as (...args: Array<unknown>) => unknown).apply(this, args)
  }
}

/**
 * A transaction's connection straight from the pool (see `Transaction.Lease`): `pool.connect`, and the pooled
 * client given back by the transaction itself, where `@effect/sql-pg`'s `reserve` would register the release
 * as a finalizer of a scope made for each transaction. The statements run through `@effect/sql-pg`'s own
 * connection class (taken from one reserved connection, which holds its pooled client as `pg`), so they keep
 * its execution, streaming and cancel-on-interrupt (`pg_cancel_backend`) as they are. Should that class not
 * be recognised, the client's scoped `reserve` is used, as before.
 *
 * As with `reserve`, a client that emitted `error` while held is handed back with that error, so the pool
 * destroys it instead of lending it again. The connection is taken uninterruptibly (the transaction does so),
 * so every client the pool hands over reaches a transaction that gives it back.
 */
const poolLease = (
  pool: pg.Pool,
  client: SqlClient.SqlClient
): Effect.Effect<Effect.Effect<Lease, SqlError> | undefined, SqlError> =>
  Effect.map(Effect.scoped(client.reserve), (probe) => {
    const held = (probe as { pg?: { query?: unknown } }).pg
    if (typeof held?.query !== "function") return undefined
    const Impl = probe.constructor as new(client: pg.PoolClient) => Connection
    return Effect.async<Lease, SqlError>((resume) => {
      pool.connect((cause, pooled, done) => {
        if (cause || !pooled) {
          resume(Effect.fail(
            new SqlError({
              cause: cause ?? new Error("No client returned"),
              message: "Failed to acquire connection for transaction"
            })
          ))
          return
        }
        let broken: Error | undefined
        const onError = (error: Error) => {
          broken = error
        }
        pooled.on("error", onError)
        resume(Effect.succeed({
          connection: new Impl(pooled),
          release: Effect.sync(() => {
            pooled.off("error", onError)
            done(broken)
          })
        }))
      })
    })
  })

/**
 * A real PostgreSQL server. int8 columns are read as numbers, as on PGlite. A server that is unreachable at
 * startup is retried for `connectRetry` (default 30 s; 0 turns it off) before the layer fails.
 */
export const layerPostgres = (options: {
  readonly url: string
  readonly maxConnections?: number
  readonly connectRetry?: Duration.DurationInput
  /**
   * Longest wait for the answer to one statement before its connection is taken for dead and closed: the
   * statement fails with a transient `ConnectionLost` (its transaction did not commit; a `COMMIT` fails with
   * `CommitUnknown`). Bounds every statement against a server that hangs with its connections up, which TCP
   * never reports; without it a statement, and the interruption of one, waits as long as the server does.
   * Default 5 minutes, above any statement Bulwark runs; 0 turns it off.
   */
  readonly queryTimeout?: Duration.DurationInput
}): Layer.Layer<SqlClient.SqlClient | Database, SqlError | DatabaseUrlError> =>
  Layer.unwrapEffect(
    Effect.map(Effect.zipRight(parseUrl(options.url), loadPg), ({ PgClient, pg: pgModule, pgTypes }) => {
      const types = {
        getTypeParser: ((oid: number, format?: string) =>
          oid === 20 ? (value: string) => Number(value) : (pgTypes.getTypeParser as any)(oid, format)) as any
      }
      const queryTimeout = Duration.toMillis(Duration.decode(options.queryTimeout ?? "5 minutes"))
      const connected = Layer.scopedContext(Effect.gen(function*() {
        const pool = yield* acquirePool(pgModule, {
          connectionString: options.url,
          max: options.maxConnections ?? 10,
          connectionTimeoutMillis: 5_000,
          application_name: "@effect/sql-pg",
          types
        }, queryTimeout)
        const client = yield* PgClient.fromPool({ acquire: Effect.succeed(pool), types })
        patchClient(client, yield* poolLease(pool, client))
        return Context.make(PgClient.PgClient, client).pipe(Context.add(SqlClient.SqlClient, client))
      })).pipe(Layer.provide(Reactivity.layer))
      const pg = retryStartup(connected, redactUrl(options.url), Duration.decode(options.connectRetry ?? "30 seconds"))
      const database = Layer.scoped(
        Database,
        Effect.zipWith(PgClient.PgClient, makeListener(options.url, pgModule.Client), (client, listen) => ({
          engine: "postgres" as const,
          location: redactUrl(options.url),
          listen,
          notify: notifyWith(client)
        }))
      )
      return Layer.merge(pg, Layer.provide(database, pg))
    })
  ).pipe(Layer.provide(Reactivity.layer))


/**
 * The database chosen by configuration: `BULWARK_DATABASE_URL` (a postgres:// URL) when set, otherwise
 * the embedded PGlite in `BULWARK_DATA_DIR` (default `.bulwark/pglite`). `BULWARK_DATABASE_CONNECT_RETRY`
 * (a duration, default `30 seconds`) bounds the wait for a server that is unreachable at startup;
 * `BULWARK_DATABASE_QUERY_TIMEOUT` (default `5 minutes`, `0 seconds` turns it off) the wait for one statement's answer.
 */
export const layerConfig = (): Layer.Layer<SqlClient.SqlClient | Database, SqlError | DatabaseUrlError | import("effect/ConfigError").ConfigError> =>
  Layer.unwrapEffect(
    Effect.gen(function*() {
      const url = yield* Config.option(Config.string("BULWARK_DATABASE_URL"))
      if (Option.isSome(url) && url.value.trim() !== "") {
        const connectRetry = yield* Config.withDefault(Config.duration("BULWARK_DATABASE_CONNECT_RETRY"), Duration.seconds(30))
        const queryTimeout = yield* Config.withDefault(Config.duration("BULWARK_DATABASE_QUERY_TIMEOUT"), Duration.minutes(5))
        return layerPostgres({ url: url.value.trim(), connectRetry, queryTimeout })
      }
      const dataDir = yield* Config.withDefault(Config.string("BULWARK_DATA_DIR"), defaultDataDir)
      return layerPglite({ dataDir })
    })
  )

/** An operator tool was pointed at an embedded database that does not exist (it does not create one). */
export class NoEmbeddedDatabase extends Data.TaggedError("NoEmbeddedDatabase")<{
  readonly dataDir: string
}> {
  override get message(): string {
    return `there is no embedded database at ${this.dataDir}. Point BULWARK_DATABASE_URL at your Postgres or ` +
      "BULWARK_DATA_DIR at the application's data directory."
  }
}

/**
 * The database an operator tool (a CLI command) opens, as configured like {@link layerConfig}, and a line
 * saying which one (for stderr). Unlike the application, a tool never creates an embedded database: a typo
 * in `BULWARK_DATA_DIR`, or the wrong current directory, would otherwise show a fresh, empty store.
 */
export const existingConfig: Effect.Effect<
  { readonly layer: Layer.Layer<SqlClient.SqlClient | Database, SqlError | DatabaseUrlError>; readonly description: string },
  NoEmbeddedDatabase | DatabaseUrlError | import("effect/ConfigError").ConfigError
> = Effect.gen(function*() {
  const url = Option.map(yield* Config.option(Config.string("BULWARK_DATABASE_URL")), (value) => value.trim())
  if (Option.isSome(url) && url.value !== "") {
    yield* parseUrl(url.value)
    return { layer: layerPostgres({ url: url.value }), description: redactUrl(url.value) }
  }
  const dataDir = resolvePath(yield* Config.withDefault(Config.string("BULWARK_DATA_DIR"), defaultDataDir))
  if (!existsSync(joinPath(dataDir, "PG_VERSION"))) return yield* new NoEmbeddedDatabase({ dataDir })
  return { layer: layerPglite({ dataDir }), description: `PGlite at ${dataDir}` }
})
