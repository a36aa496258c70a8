/** The pgoutput frames the CDC relay decodes, built byte by byte as the protocol documentation lays them out. */
import { describe, expect, it } from "vitest"
import * as Pgoutput from "../src/internal/cdc/pgoutput.js"

const int64 = (n: bigint) => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(n)
  return b
}
const int32 = (n: number) => {
  const b = Buffer.alloc(4)
  b.writeInt32BE(n)
  return b
}
const int16 = (n: number) => {
  const b = Buffer.alloc(2)
  b.writeInt16BE(n)
  return b
}
const cstring = (s: string) => Buffer.concat([Buffer.from(s, "utf8"), Buffer.from([0])])
const xlog = (start: bigint, message: Buffer) => Buffer.concat([Buffer.from("w"), int64(start), int64(start + 100n), int64(0n), message])

describe("pgoutput decoding", () => {
  it("writes and reads LSNs as PostgreSQL does", () => {
    expect(Pgoutput.formatLsn(0x16B3748n)).toBe("0/16B3748")
    expect(Pgoutput.formatLsn((3n << 32n) + 0xAn)).toBe("3/A")
    expect(Pgoutput.parseLsn("3/A")).toBe((3n << 32n) + 0xAn)
    expect(Pgoutput.parseLsn(Pgoutput.formatLsn(0xFFFFFFFF_00000001n))).toBe(0xFFFFFFFF_00000001n)
  })

  it("decodes Begin, Relation, Insert (NULLs, skipped columns, UTF-8) and Commit", () => {
    const begin = Pgoutput.decodeFrame(xlog(10n, Buffer.concat([Buffer.from("B"), int64(500n), int64(0n), int32(1234)])))
    expect(begin).toMatchObject({ _tag: "XLogData", start: 10n, walEnd: 110n, message: { _tag: "Begin", finalLsn: 500n, xid: 1234 } })

    const relation = Pgoutput.decodeFrame(xlog(20n, Buffer.concat([
      Buffer.from("R"), int32(16384), cstring("public"), cstring("bulwark_outbox"), Buffer.from("d"), int16(3),
      Buffer.from([1]), cstring("id"), int32(20), int32(-1),
      Buffer.from([0]), cstring("topic"), int32(25), int32(-1),
      Buffer.from([0]), cstring("last_error"), int32(25), int32(-1)
    ])))
    expect(relation).toMatchObject({ message: { _tag: "Relation", oid: 16384, schema: "public", name: "bulwark_outbox" } })
    expect(relation._tag === "XLogData" && relation.message._tag === "Relation" && relation.message.columns.map((c) => c.name))
      .toEqual(["id", "topic", "last_error"])

    const tuple = Buffer.concat([
      Buffer.from("I"), int32(16384), Buffer.from("N"), int16(3),
      Buffer.from("t"), int32(2), Buffer.from("42"),
      Buffer.from("t"), int32(Buffer.byteLength("commandes-é")), Buffer.from("commandes-é"),
      Buffer.from("n")
    ])
    expect(Pgoutput.decodeFrame(xlog(30n, tuple))).toMatchObject({ message: { _tag: "Insert", relation: 16384, values: ["42", "commandes-é", null] } })
    // Columns the relay does not read are skipped undecoded.
    expect(Pgoutput.decodeFrame(xlog(30n, tuple), () => new Uint8Array([1, 0, 0]))).toMatchObject({ message: { values: ["42", null, null] } })

    const commit = Pgoutput.decodeFrame(xlog(40n, Buffer.concat([Buffer.from("C"), Buffer.from([0]), int64(480n), int64(520n), int64(0n)])))
    expect(commit).toMatchObject({ message: { _tag: "Commit", commitLsn: 480n, endLsn: 520n } })
    // Messages the relay does not use (here a Type message) are skipped by their tag.
    expect(Pgoutput.decodeFrame(xlog(50n, Buffer.from("Y")))).toMatchObject({ message: { _tag: "Other", tag: "Y" } })
  })

  it("decodes keepalives and encodes the standby status update", () => {
    expect(Pgoutput.decodeFrame(Buffer.concat([Buffer.from("k"), int64(777n), int64(0n), Buffer.from([1])])))
      .toEqual({ _tag: "Keepalive", walEnd: 777n, replyRequested: true })
    const status = Pgoutput.standbyStatus(900n, 800n, Date.UTC(2000, 0, 1, 0, 0, 1))
    expect(status.length).toBe(34)
    expect(String.fromCharCode(status[0]!)).toBe("r")
    expect([status.readBigUInt64BE(1), status.readBigUInt64BE(9), status.readBigUInt64BE(17)]).toEqual([900n, 800n, 800n])
    // Microseconds since 2000-01-01, PostgreSQL's epoch.
    expect(status.readBigUInt64BE(25)).toBe(1_000_000n)
    expect(status[33]).toBe(0)
  })

  it("reads bytea in hex output, and nothing else", () => {
    expect(Pgoutput.byteaFromText("\\x00ff41")).toEqual(Buffer.from([0, 255, 65]))
    expect(Pgoutput.byteaFromText("A\\000")).toBeUndefined()
  })
})
