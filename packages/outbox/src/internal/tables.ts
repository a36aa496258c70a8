import type { Migrations } from "@bulwark/sql"

export const outboxMigrations = (table: string): ReadonlyArray<Migrations.Migration> => [{
  id: 1,
  name: "outbox table",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${table} (
      id bigserial PRIMARY KEY,
      topic text NOT NULL,
      message_id text NOT NULL,
      key text NOT NULL,
      payload bytea NOT NULL,
      headers text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      attempts integer NOT NULL DEFAULT 0,
      state text NOT NULL DEFAULT 'pending',
      available_at timestamptz NOT NULL DEFAULT now(),
      claimed_by text,
      claimed_until timestamptz,
      published_at timestamptz,
      last_error text,
      dead_letter_published boolean
    )`,
    `CREATE INDEX IF NOT EXISTS ${table}_pending ON ${table} (id) WHERE state = 'pending'`,
    `CREATE INDEX IF NOT EXISTS ${table}_pending_key ON ${table} (key, id) WHERE state = 'pending'`,
    `CREATE INDEX IF NOT EXISTS ${table}_published ON ${table} (published_at) WHERE state = 'published'`
  ]
}, {
  id: 2,
  name: "sleeping relays",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${sleepersTable(table)} (
      relay_id text PRIMARY KEY,
      since timestamptz NOT NULL DEFAULT now()
    )`
  ]
}, {
  id: 3,
  name: "append time",
  // When the row was inserted (not when its transaction began, as `created_at`): a transaction that began
  // before it and still writes the outbox might yet commit an older row of the same key. Added without a
  // default first, so the ALTER does not rewrite an existing table: rows from before have none (old rows).
  statements: [
    `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS appended_at timestamptz`,
    `ALTER TABLE ${table} ALTER COLUMN appended_at SET DEFAULT clock_timestamp()`
  ]
}, {
  id: 4,
  name: "room for the claim on each page",
  // The claim's UPDATE touches no indexed column, so with free room on the row's page PostgreSQL writes the
  // new version there without new index entries (a HOT update): a third of the claim's WAL and no index
  // growth. Half of each page is left free so that every row of a page fits a claimed version beside it.
  // Applies to pages written from now on; an existing table needs no rewrite.
  statements: [`ALTER TABLE ${table} SET (fillfactor = 50)`]
}, {
  id: 5,
  name: "partition leases",
  // For the partitioned relay (`partitioned: true`): a fixed set of partitions, each leased by at most one
  // relay, and the relays that share them. A row's partition is derived from its key by an expression (see
  // `partitionOf`), not stored, so existing rows need no rewrite and every row of a key maps to one partition.
  // The `retrying` index holds only rows waiting for a retry (usually none): the partitioned claim reads it to
  // keep a retrying row's key behind it.
  statements: [
    `CREATE TABLE IF NOT EXISTS ${partitionsTable(table)} (
      partition integer PRIMARY KEY,
      owner text,
      lease_until timestamptz
    )`,
    `INSERT INTO ${partitionsTable(table)} (partition)
      SELECT generate_series(0, ${partitionCount - 1}) ON CONFLICT (partition) DO NOTHING`,
    `CREATE TABLE IF NOT EXISTS ${relaysTable(table)} (
      relay_id text PRIMARY KEY,
      seen_until timestamptz NOT NULL
    )`,
    `CREATE INDEX IF NOT EXISTS ${table}_retrying ON ${table} (key) WHERE state = 'pending' AND attempts > 0`
  ]
}]

/**
 * How many partitions the partitioned relay shares out: fixed, since every relay of a table must map a key to
 * the same partition. More partitions than relays, so that a newcomer gets a fair share.
 */
export const partitionCount = 32

/**
 * A row's partition, as a SQL expression over the row alias `r`: a keyed row by a hash of its key (all rows of
 * a key in one partition, so one relay reads them in order), a keyless row by its id (unordered, spread out).
 */
export const partitionOf = (r: string) =>
  `(CASE WHEN ${r}.key = '' THEN ${r}.id % ${partitionCount} ELSE (hashtext(${r}.key) & 2147483647) % ${partitionCount} END)::int`

/** The partition leases of the partitioned relay. */
export const partitionsTable = (table: string) => `${table}_partitions`

/** The relays sharing the partitions, each with the time its registration lapses. */
export const relaysTable = (table: string) => `${table}_relays`

/** The relays waiting for a notification; `append` sends one only while this table has a row. */
export const sleepersTable = (table: string) => `${table}_sleepers`

export const inboxMigrations = (table: string): ReadonlyArray<Migrations.Migration> => [{
  id: 1,
  name: "inbox table",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${table} (
      consumer text NOT NULL,
      message_id text NOT NULL,
      processed_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (consumer, message_id)
    )`,
    `CREATE INDEX IF NOT EXISTS ${table}_processed ON ${table} (processed_at)`
  ]
}]
