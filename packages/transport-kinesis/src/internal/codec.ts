/**
 * Records: Kinesis keeps a data blob and a partition key per record, nothing else, so the message id, key and
 * headers travel framed in front of the payload: the magic `BWK1`, a 4-byte big-endian length, that many bytes
 * of JSON `{ id, key?, headers? }` (the key only when the partition key is not it, the headers only when there
 * are some), then the payload. A record another producer wrote (no magic) is delivered
 * with its blob as the payload, its partition key as the key and its sequence number as the id.
 */
import type { PutRecordsRequestEntry, _Record } from "@aws-sdk/client-kinesis"
import type { Delivery } from "@bulwark/core"
import type { Transport } from "@bulwark/transport"
import { createHash } from "node:crypto"

const magic = Buffer.from("BWK1", "ascii")
const prefixBytes = magic.length + 4

// Kinesis caps a partition key at 256 Unicode characters; longer keys are hashed (same key, same shard).
const partitionKey = (key: string) => key.length <= 256 ? key : createHash("sha256").update(key).digest("hex")

/** A PutRecords entry: the framed message, partitioned by its key (a keyless message by its id, spreading them). */
export const encode = (message: Transport.OutgoingMessage): PutRecordsRequestEntry => {
  const partition = partitionKey(message.key === "" ? message.id : message.key)
  // The key travels as the partition key when it is one (most are), the headers only when there are some.
  const fields: { id: string; key?: string; headers?: Readonly<Record<string, string>> } = { id: message.id }
  if (partition !== message.key) fields.key = message.key
  for (const _ in message.headers) {
    fields.headers = message.headers
    break
  }
  const meta = Buffer.from(JSON.stringify(fields), "utf8")
  // A buffer of its own (not a slice of Node's shared pool), as the client expects of a blob.
  const data = new Uint8Array(prefixBytes + meta.length + message.payload.byteLength)
  data.set(magic, 0)
  new DataView(data.buffer).setUint32(magic.length, meta.length)
  data.set(meta, prefixBytes)
  data.set(message.payload, prefixBytes + meta.length)
  return { Data: data, PartitionKey: partition }
}

/** The bytes an entry costs against PutRecords' 5 MiB (data and partition key). */
export const entrySize = (entry: PutRecordsRequestEntry): number => (entry.Data?.byteLength ?? 0) + Buffer.byteLength(entry.PartitionKey ?? "")

/** Decodes what {@link encode} wrote; anything else keeps its blob as the payload. */
export const decode = (topic: string, record: _Record): Delivery.Message => {
  const data = record.Data ?? new Uint8Array()
  const foreign = (): Delivery.Message => ({
    id: record.SequenceNumber ?? "",
    topic,
    key: record.PartitionKey ?? "",
    payload: data,
    headers: {}
  })
  if (data.byteLength < prefixBytes || !magic.equals(data.subarray(0, magic.length))) return foreign()
  const view = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const length = view.readUInt32BE(magic.length)
  if (prefixBytes + length > data.byteLength) return foreign()
  try {
    const meta: unknown = JSON.parse(view.toString("utf8", prefixBytes, prefixBytes + length))
    const fields = meta as { id?: unknown; key?: unknown; headers?: unknown }
    const id = fields.id
    const key = fields.key === undefined ? record.PartitionKey : fields.key
    const headers = fields.headers === undefined ? {} : fields.headers
    if (typeof id !== "string" || typeof key !== "string" || typeof headers !== "object" || headers === null) return foreign()
    const names = Object.keys(headers)
    // fromEntries defines own properties: a header named `__proto__` stays a header.
    const copied: Record<string, string> = names.length === 0
      ? {}
      : Object.fromEntries(names.map((name) => [name, String((headers as Record<string, unknown>)[name])]))
    return { id, topic, key, payload: data.subarray(prefixBytes + length), headers: copied }
  } catch {
    return foreign()
  }
}
