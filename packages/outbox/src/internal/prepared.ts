import type { Connection } from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import type { Effect } from "effect"

/**
 * A statement the outbox runs many times (claim, settle, append), as the driver connection's `executeRaw`
 * takes it. On PostgreSQL it is a named prepared statement: each connection parses and plans it once, where
 * an unnamed statement is planned on every run (about a millisecond for the claim, every round). `pg`'s
 * `client.query`, which `@effect/sql-pg`'s connection hands its text to unchanged, takes a `{ name, text }`
 * query config in place of the text; PGlite gets the plain text, so both engines run one code path.
 */
export interface Prepared {
  readonly run: (connection: Connection, params: ReadonlyArray<unknown>) => Effect.Effect<RawResult, SqlError>
}

/** What `executeRaw` answers on both engines: `pg`'s `Result` and PGlite's `Results` both carry the rows. */
export interface RawResult {
  readonly rows: ReadonlyArray<any>
  /** How many rows an `INSERT`, `UPDATE` or `DELETE` wrote, on `pg`. */
  readonly rowCount?: number | null
  /** How many rows an `INSERT`, `UPDATE` or `DELETE` wrote, on PGlite. */
  readonly affectedRows?: number
}

/** How many rows a data-modifying statement wrote, on either engine. */
export const affectedRows = (result: RawResult): number => result.rowCount ?? result.affectedRows ?? 0

// FNV-1a: a short, stable name per text, within PostgreSQL's 63-byte identifier limit whatever the table name.
const hash = (text: string) => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0).toString(36)
}

/** `text` as a statement prepared once per connection on PostgreSQL (`named`), plain on PGlite. */
export const prepared = (kind: string, text: string, named: boolean): Prepared => {
  const statement = named ? { name: `bulwark_${kind}_${hash(text)}`, text } as unknown as string : text
  return {
    run: (connection, params) => connection.executeRaw(statement, params) as Effect.Effect<RawResult, SqlError>
  }
}
