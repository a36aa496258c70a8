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
}]

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
