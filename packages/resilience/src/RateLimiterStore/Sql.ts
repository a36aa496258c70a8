/**
 * The SQL driver of {@link RateLimiterStore}, one implementation for the embedded PGlite and a PostgreSQL
 * server (migrations included). A reservation is one statement, a PL/pgSQL function beside the table (one
 * round trip, its own transaction): an upsert that takes the key's row lock, the server's clock read after
 * the lock, the decision and the update. Every process over the database therefore shares one limit and one
 * timeline. Rows whose state no longer matters are deleted now and then.
 *
 * Grants on one key are serialised by its row lock, so one key sustains what one row lock allows; use the
 * Redis driver for hotter keys.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Migrations from "@bulwark/sql/Migrations"
import { Effect, Layer } from "effect"
import * as Algorithm from "../internal/algorithm.js"
import { type Decision, RateLimiterStore, RateLimiterStoreError } from "../RateLimiterStore.js"

/** Settings of the SQL store. */
export interface Options {
  /** The table name. Default `bulwark_rate_limits`. */
  readonly table?: string
}

/** The default table name. */
export const defaultTable = "bulwark_rate_limits"

/** The function that makes a reservation in one statement (beside its table). */
export const reserveFunction = (table: string): string => `${table}_reserve`

// The reservation of internal/algorithm.ts in PL/pgSQL, so a reservation is one statement (one round trip,
// its own transaction): the upsert takes the key's row lock, the server's clock is read after it, the
// decision and the update follow under the lock. Arguments: kind (1 token bucket, 2 sliding window),
// capacity|limit, interval|window (ms), permits, max wait (ms). The state keeps the JSON layout the
// TypeScript side reads (`{"tat": …, "log": […]}`).
const reserveBody = (table: string) => `
CREATE OR REPLACE FUNCTION ${reserveFunction(table)}(
  p_key text, p_kind int, p_a float8, p_b float8, p_permits int, p_max_wait float8
) RETURNS TABLE (granted boolean, at_ms float8, wait_ms float8) LANGUAGE plpgsql AS $body$
DECLARE
  st jsonb;
  now_ms float8;
  tat float8;
  nxt float8;
  t_at float8;
  w float8;
  grants float8[];
  n int;
  bound int;
  stale int := 0;
BEGIN
  INSERT INTO ${table} AS r (key, state, horizon) VALUES (p_key, '{"tat":0,"log":[]}', 0)
    ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key
    RETURNING r.state::jsonb INTO st;
  now_ms := floor(extract(epoch from clock_timestamp()) * 1000);
  tat := (st->>'tat')::float8;
  IF p_kind = 1 THEN
    nxt := greatest(tat, now_ms) + p_permits * p_b;
    t_at := nxt - p_a * p_b;
    w := greatest(0, t_at - now_ms);
    IF w > p_max_wait THEN
      RETURN QUERY SELECT false, 0::float8, w;
      RETURN;
    END IF;
    UPDATE ${table} SET state = jsonb_build_object('tat', nxt, 'log', '[]'::jsonb)::text, horizon = nxt WHERE key = p_key;
    RETURN QUERY SELECT true, greatest(t_at, now_ms), w;
    RETURN;
  END IF;
  grants := ARRAY(SELECT x::float8 FROM jsonb_array_elements_text(st->'log') WITH ORDINALITY AS e(x, i) ORDER BY i);
  n := coalesce(array_length(grants, 1), 0);
  WHILE stale < n AND grants[stale + 1] <= now_ms - p_b LOOP
    stale := stale + 1;
  END LOOP;
  IF stale > 0 THEN
    grants := grants[stale + 1 : n];
    n := n - stale;
  END IF;
  bound := n - p_a::int + p_permits - 1;
  t_at := now_ms;
  IF bound >= 0 THEN t_at := greatest(t_at, grants[bound + 1] + p_b); END IF;
  IF n > 0 THEN t_at := greatest(t_at, grants[n]); END IF;
  w := t_at - now_ms;
  IF w > p_max_wait THEN
    RETURN QUERY SELECT false, 0::float8, w;
    RETURN;
  END IF;
  FOR i IN 1..p_permits LOOP
    grants := grants || t_at;
  END LOOP;
  UPDATE ${table} SET state = jsonb_build_object('tat', tat, 'log', to_jsonb(grants))::text, horizon = t_at + p_b
    WHERE key = p_key;
  RETURN QUERY SELECT true, t_at, w;
END
$body$`

/** The migrations of one rate-limit table. */
export const migrations = (table: string): ReadonlyArray<Migrations.Migration> => [{
  id: 1,
  name: "create rate-limit table",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${table} (
      key text PRIMARY KEY,
      state text NOT NULL,
      horizon double precision NOT NULL
    )`,
    `CREATE INDEX IF NOT EXISTS ${table}_horizon ON ${table} (horizon)`
  ]
}, {
  id: 2,
  name: "reserve in one statement",
  statements: [reserveBody(table)]
}]

interface Reply {
  readonly granted: boolean
  readonly at_ms: number | string
  readonly wait_ms: number | string
}

/** Builds the store over the `SqlClient` in context, migrating its table first. */
export const make = (options: Options = {}): Effect.Effect<
  RateLimiterStore["Type"],
  SqlError | Migrations.InvalidTableName,
  SqlClient.SqlClient
> =>
  Effect.gen(function*() {
    const table = yield* Migrations.tableName(options.table ?? defaultTable)
    yield* Migrations.run(`rate-limit:${table}`, migrations(table))
    const sql = yield* SqlClient.SqlClient
    const t = sql(table)
    const reserve = sql(reserveFunction(table))
    let reservations = 0
    return RateLimiterStore.of({
      reserve: (key, rule, permits, maxWaitMillis) =>
        (rule.kind === "tokenBucket"
          ? sql<Reply>`SELECT granted, at_ms, wait_ms FROM ${reserve}(${key}, 1, ${rule.capacity}::float8,
              ${rule.intervalMillis}::float8, ${permits}::int, ${maxWaitMillis}::float8)`
          : sql<Reply>`SELECT granted, at_ms, wait_ms FROM ${reserve}(${key}, 2, ${rule.limit}::float8,
              ${rule.windowMillis}::float8, ${permits}::int, ${maxWaitMillis}::float8)`).pipe(
          Effect.map((rows): Decision => {
            const row = rows[0]!
            return row.granted
              ? { granted: true, at: Number(row.at_ms), waitMillis: Number(row.wait_ms) }
              : { granted: false, retryAfterMillis: Number(row.wait_ms) }
          }),
          Effect.mapError((cause) => new RateLimiterStoreError({ operation: "reserve", key, cause })),
          // Outside the reservation's transaction: it takes no lock while holding one. A failed sweep costs
          // nothing but space, so it is logged and the next one tries again.
          Effect.tap(() =>
            ++reservations % 1_000 !== 0 ? Effect.void : sql`DELETE FROM ${t}
              WHERE horizon < floor(extract(epoch from clock_timestamp()) * 1000)`.pipe(
              Effect.catchAll((cause) => Effect.logWarning("rate limiter: sweeping idle keys failed", cause))
            )
          )
        ),
      release: (key, rule, permits, at) =>
        sql.withTransaction(Effect.gen(function*() {
          const rows = yield* sql<{ state: string }>`SELECT state FROM ${t} WHERE key = ${key} FOR UPDATE`
          if (rows.length === 0) return
          const state = JSON.parse(rows[0]!.state) as Algorithm.State
          if (!Algorithm.release(state, rule, permits, at)) return
          yield* sql`UPDATE ${t} SET state = ${JSON.stringify(state)}, horizon = ${Algorithm.horizon(state, rule)}
            WHERE key = ${key}`
        })).pipe(Effect.mapError((cause) => new RateLimiterStoreError({ operation: "release", key, cause })))
    })
  })

/** The SQL store as a layer over the `SqlClient` in context. */
export const layer = (options: Options = {}): Layer.Layer<
  RateLimiterStore,
  SqlError | Migrations.InvalidTableName,
  SqlClient.SqlClient
> => Layer.effect(RateLimiterStore, make(options))

/** Drops the store's table and forgets its migrations (tests, teardown). */
export const drop = (table: string = defaultTable): Effect.Effect<void, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const checked = yield* Migrations.tableName(table)
    yield* sql`DROP FUNCTION IF EXISTS ${sql(reserveFunction(checked))}`
    yield* sql`DROP TABLE IF EXISTS ${sql(checked)}`
    yield* sql`DELETE FROM bulwark_migrations WHERE component = ${`rate-limit:${checked}`}`
  })
