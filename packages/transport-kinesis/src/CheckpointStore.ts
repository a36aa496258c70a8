/**
 * Where a Kinesis consumer group keeps its place: one row per (stream, group, shard) holding the lease (which
 * process reads the shard, and until when) and the checkpoint (the last sequence number every record up to
 * which was settled), as the KCL keeps in its DynamoDB lease table.
 *
 * Kinesis itself remembers nothing about readers, so without this a restarted consumer would start over at
 * the trim horizon and a second process would read the same shards. The store is a port so the rows can live
 * next to the application's own state: `CheckpointStore/Sql` (PostgreSQL or the embedded PGlite, persistent)
 * or {@link layerMemory} (one process, for tests: a restart reads the retained records again, nothing is lost).
 *
 * Leases are fenced by owner: a process whose lease expired and was taken over can no longer move the
 * checkpoint. Time is the store's clock (the database server's), never the readers'.
 */
import { Failure } from "@bulwark/core"
import { Context, Data, Duration, Effect, Layer } from "effect"

/** A shard of a stream, read by a consumer group. */
export interface ShardKey {
  readonly stream: string
  readonly group: string
  readonly shard: string
}

/** A consumer group of a stream: its readers share the stream's shards. */
export interface GroupKey {
  readonly stream: string
  readonly group: string
}

/** A lease just taken: where to resume and what was handed out before. */
export interface Lease {
  /** The last settled sequence number; `undefined`: start at the trim horizon. */
  readonly checkpoint: string | undefined
  /** The highest sequence number a previous owner fetched; records up to it were probably delivered already. */
  readonly delivered: string | undefined
  /** Takeovers since the checkpoint last caught up with `delivered` (counts towards a record's attempt). */
  readonly retries: number
  /** The shard was read to its end (closed by a reshard) and everything in it settled. */
  readonly ended: boolean
}

/** The store could not be read or written. Transient, category `dependency`. */
export class CheckpointStoreError extends Data.TaggedError("CheckpointStoreError")<{
  readonly operation: "claim" | "renew" | "checkpoint" | "delivered" | "release" | "ended" | "announce" | "leave"
  readonly cause: unknown
}> {
  // A store that answers again makes the same call succeed.
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }

  override get message(): string {
    return `checkpoint store ${this.operation} failed: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** The operations a store implements. Every write is conditional on `owner` holding the lease. */
export interface Service {
  /** Whether checkpoints outlive the process. */
  readonly persistent: boolean
  /** Takes the shard's lease if it is free, expired or already `owner`'s; `undefined` when another owner holds it. */
  readonly claim: (key: ShardKey, owner: string, lease: Duration.Duration) => Effect.Effect<Lease | undefined, CheckpointStoreError>
  /** Extends `owner`'s lease; false when it was lost (expired and taken). */
  readonly renew: (key: ShardKey, owner: string, lease: Duration.Duration) => Effect.Effect<boolean, CheckpointStoreError>
  /** Moves the checkpoint (and resets `retries` when `caughtUp`); false when the lease was lost. */
  readonly checkpoint: (
    key: ShardKey,
    owner: string,
    position: { readonly sequence: string; readonly caughtUp: boolean; readonly ended: boolean }
  ) => Effect.Effect<boolean, CheckpointStoreError>
  /** Records the highest fetched sequence number; false when the lease was lost. */
  readonly delivered: (key: ShardKey, owner: string, sequence: string) => Effect.Effect<boolean, CheckpointStoreError>
  /** Gives the lease up (the checkpoint stays). */
  readonly release: (key: ShardKey, owner: string) => Effect.Effect<void, CheckpointStoreError>
  /** Whether the shard was read to its end and settled (a child shard waits for its parents). */
  readonly ended: (key: ShardKey) => Effect.Effect<boolean, CheckpointStoreError>
  /**
   * Marks `owner`'s reader alive in the group for `ttl` and answers how many readers are alive, itself
   * included: each reader holds about its share of the shards, so a process joining a group gets work.
   */
  readonly announce: (group: GroupKey, owner: string, ttl: Duration.Duration) => Effect.Effect<number, CheckpointStoreError>
  /** Takes `owner`'s reader out of the group at once (it is closing), so the others' shares grow without waiting. */
  readonly leave: (group: GroupKey, owner: string) => Effect.Effect<void, CheckpointStoreError>
}

/** The checkpoint store the Kinesis transport reads and writes its consumer groups' positions in. */
export class CheckpointStore extends Context.Tag("@bulwark/transport-kinesis/CheckpointStore")<CheckpointStore, Service>() {}

interface Row {
  owner: string | undefined
  leaseUntil: number
  checkpoint: string | undefined
  delivered: string | undefined
  retries: number
  ended: boolean
}

const rowKey = (key: ShardKey) => `${key.stream}\u0000${key.group}\u0000${key.shard}`

/** A store in this process's memory: leases work between subscriptions of one process only. */
export const makeMemory: Effect.Effect<Service> = Effect.sync(() => {
  const rows = new Map<string, Row>()
  // Per group, each reader's owner and until when it counts as alive.
  const members = new Map<string, Map<string, number>>()
  const groupKey = (group: GroupKey) => `${group.stream}\u0000${group.group}`
  const held = (key: ShardKey, owner: string) => {
    const row = rows.get(rowKey(key))
    return row !== undefined && row.owner === owner && row.leaseUntil > Date.now() ? row : undefined
  }
  return {
    persistent: false,
    claim: (key, owner, lease) =>
      Effect.sync(() => {
        const now = Date.now()
        let row = rows.get(rowKey(key))
        if (row === undefined) {
          row = { owner: undefined, leaseUntil: 0, checkpoint: undefined, delivered: undefined, retries: 0, ended: false }
          rows.set(rowKey(key), row)
        }
        if (row.owner !== undefined && row.owner !== owner && row.leaseUntil > now) return undefined
        if (row.owner !== owner && row.delivered !== undefined && row.delivered !== row.checkpoint) row.retries++
        row.owner = owner
        row.leaseUntil = now + Duration.toMillis(lease)
        return { checkpoint: row.checkpoint, delivered: row.delivered, retries: row.retries, ended: row.ended }
      }),
    renew: (key, owner, lease) =>
      Effect.sync(() => {
        const row = held(key, owner)
        if (row === undefined) return false
        row.leaseUntil = Date.now() + Duration.toMillis(lease)
        return true
      }),
    checkpoint: (key, owner, position) =>
      Effect.sync(() => {
        const row = held(key, owner)
        if (row === undefined) return false
        row.checkpoint = position.sequence
        row.ended = position.ended
        if (position.caughtUp) row.retries = 0
        return true
      }),
    delivered: (key, owner, sequence) =>
      Effect.sync(() => {
        const row = held(key, owner)
        if (row === undefined) return false
        row.delivered = sequence
        return true
      }),
    release: (key, owner) =>
      Effect.sync(() => {
        const row = rows.get(rowKey(key))
        if (row !== undefined && row.owner === owner) {
          row.owner = undefined
          row.leaseUntil = 0
        }
      }),
    ended: (key) => Effect.sync(() => rows.get(rowKey(key))?.ended ?? false),
    announce: (group, owner, ttl) =>
      Effect.sync(() => {
        const now = Date.now()
        let alive = members.get(groupKey(group))
        if (alive === undefined) members.set(groupKey(group), alive = new Map())
        alive.set(owner, now + Duration.toMillis(ttl))
        for (const [other, until] of alive) if (until <= now) alive.delete(other)
        return alive.size
      }),
    leave: (group, owner) =>
      Effect.sync(() => {
        members.get(groupKey(group))?.delete(owner)
      })
  }
})

/** {@link makeMemory} as a layer: one store per layer build. */
export const layerMemory = (): Layer.Layer<CheckpointStore> => Layer.effect(CheckpointStore, makeMemory)
