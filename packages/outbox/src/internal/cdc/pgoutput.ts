/**
 * The few parts of PostgreSQL's streaming replication protocol and of the `pgoutput` plugin's logical
 * messages (protocol version 1, text values) that an outbox relay needs: WAL data and keepalive frames,
 * the standby status update, and Begin, Relation, Insert and Commit. Everything else the plugin sends
 * (origin, type, update, delete, truncate, logical messages) is skipped by its tag: the publication only
 * publishes inserts, and an unknown tag is skipped rather than failing, so a newer server's extra messages
 * do not stop the relay.
 */

/** A WAL position. */
export type Lsn = bigint

/** `X/Y` (hex), as PostgreSQL writes an LSN. */
export const formatLsn = (lsn: Lsn): string => `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`

/** Reads `X/Y` (hex). */
export const parseLsn = (text: string): Lsn => {
  const [high, low] = text.split("/")
  return (BigInt(`0x${high ?? "0"}`) << 32n) + BigInt(`0x${low ?? "0"}`)
}

/** A column of a relation, as the Relation message describes it. */
export interface Column {
  readonly name: string
  readonly typeOid: number
}

/** A decoded pgoutput message. Values are the server's text output; `null` for SQL NULL. */
export type Message =
  | { readonly _tag: "Begin"; readonly finalLsn: Lsn; readonly xid: number }
  | { readonly _tag: "Commit"; readonly commitLsn: Lsn; readonly endLsn: Lsn }
  | { readonly _tag: "Relation"; readonly oid: number; readonly schema: string; readonly name: string; readonly columns: ReadonlyArray<Column> }
  | { readonly _tag: "Insert"; readonly relation: number; readonly values: ReadonlyArray<string | null> }
  | { readonly _tag: "Other"; readonly tag: string }

/** A frame of the replication stream (a CopyData payload). */
export type Frame =
  | { readonly _tag: "XLogData"; readonly start: Lsn; readonly walEnd: Lsn; readonly message: Message }
  | { readonly _tag: "Keepalive"; readonly walEnd: Lsn; readonly replyRequested: boolean }
  | { readonly _tag: "Unknown"; readonly tag: number }

class Reader {
  offset = 0
  constructor(readonly buffer: Buffer) {}
  byte() {
    return this.buffer.readUInt8(this.offset++)
  }
  int16() {
    const v = this.buffer.readInt16BE(this.offset)
    this.offset += 2
    return v
  }
  int32() {
    const v = this.buffer.readInt32BE(this.offset)
    this.offset += 4
    return v
  }
  uint32() {
    const v = this.buffer.readUInt32BE(this.offset)
    this.offset += 4
    return v
  }
  int64() {
    const v = this.buffer.readBigUInt64BE(this.offset)
    this.offset += 8
    return v
  }
  cstring() {
    const end = this.buffer.indexOf(0, this.offset)
    const v = this.buffer.toString("utf8", this.offset, end)
    this.offset = end + 1
    return v
  }
  text(length: number) {
    const v = this.buffer.toString("utf8", this.offset, this.offset + length)
    this.offset += length
    return v
  }
}

/** Which columns of a relation's inserts to decode (1) or skip (0); `undefined`: all. */
export type Wanted = (relation: number) => Uint8Array | undefined

const decodeMessage = (r: Reader, wanted?: Wanted): Message => {
  const tag = String.fromCharCode(r.byte())
  switch (tag) {
    case "B": {
      const finalLsn = r.int64()
      r.int64() // commit timestamp
      return { _tag: "Begin", finalLsn, xid: r.uint32() }
    }
    case "C": {
      r.byte() // flags
      const commitLsn = r.int64()
      return { _tag: "Commit", commitLsn, endLsn: r.int64() }
    }
    case "R": {
      const oid = r.uint32()
      const schema = r.cstring()
      const name = r.cstring()
      r.byte() // replica identity
      const count = r.int16()
      const columns: Array<Column> = []
      for (let i = 0; i < count; i++) {
        r.byte() // flags (part of the key)
        const columnName = r.cstring()
        const typeOid = r.uint32()
        r.int32() // type modifier
        columns.push({ name: columnName, typeOid })
      }
      return { _tag: "Relation", oid, schema, name, columns }
    }
    case "I": {
      const relation = r.uint32()
      r.byte() // 'N': a new tuple follows
      const count = r.int16()
      const keep = wanted?.(relation)
      const values: Array<string | null> = new Array(count)
      for (let i = 0; i < count; i++) {
        // 't' text, 'b' binary: a length and the bytes; 'n' (NULL), 'u' (unchanged TOAST, updates only): nothing.
        const kind = r.byte()
        if (kind === 0x74 || kind === 0x62) {
          const length = r.int32()
          if (keep === undefined || keep[i] === 1) values[i] = r.text(length)
          else {
            values[i] = null
            r.offset += length
          }
        } else {
          values[i] = null
        }
      }
      return { _tag: "Insert", relation, values }
    }
    default:
      return { _tag: "Other", tag }
  }
}

/** Decodes one CopyData payload of a `START_REPLICATION … LOGICAL` stream. */
export const decodeFrame = (buffer: Buffer, wanted?: Wanted): Frame => {
  const r = new Reader(buffer)
  const tag = r.byte()
  if (tag === 0x77 /* w */) {
    const start = r.int64()
    const walEnd = r.int64()
    r.int64() // send time
    return { _tag: "XLogData", start, walEnd, message: decodeMessage(r, wanted) }
  }
  if (tag === 0x6b /* k */) {
    const walEnd = r.int64()
    r.int64() // send time
    return { _tag: "Keepalive", walEnd, replyRequested: r.byte() === 1 }
  }
  return { _tag: "Unknown", tag }
}

// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const postgresEpochMicros = 946_684_800_000_000n

/**
 * The standby status update: `written` is how far the relay has received, `flushed` (and applied) how far it
 * has published, which is what the slot keeps as its confirmed position.
 */
export const standbyStatus = (written: Lsn, flushed: Lsn, nowMillis: number): Buffer => {
  const buffer = Buffer.alloc(34)
  buffer.writeUInt8(0x72 /* r */, 0)
  buffer.writeBigUInt64BE(written, 1)
  buffer.writeBigUInt64BE(flushed, 9)
  buffer.writeBigUInt64BE(flushed, 17)
  buffer.writeBigUInt64BE(BigInt(nowMillis) * 1000n - postgresEpochMicros, 25)
  buffer.writeUInt8(0, 33)
  return buffer
}

/** A `bytea` value in the server's `hex` text output (`\x…`), as bytes; `undefined` for any other form. */
export const byteaFromText = (text: string): Buffer | undefined =>
  text.startsWith("\\x") ? Buffer.from(text.slice(2), "hex") : undefined
