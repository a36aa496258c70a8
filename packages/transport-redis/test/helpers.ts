import { Chunk, Effect, Layer, Stream } from "effect"
import { Redis } from "ioredis"

export const url = process.env["BULWARK_REDIS_URL"] ?? "redis://127.0.0.1:6379"

/** A key prefix no other test run shares. */
export const testPrefix = (label: string) =>
  `bulwark-test:${label}:${Date.now().toString(36)}-${Math.floor(Math.random() * 1e9).toString(36)}:`

/** An admin connection for inspecting and breaking things; closed with the scope. */
export const admin = Effect.acquireRelease(
  Effect.promise(async () => {
    const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 })
    await redis.connect()
    return redis
  }),
  (redis) => Effect.promise(() => redis.quit().catch(() => "closed"))
)

/** Deletes every key under `prefix` (SCAN + DEL). */
export const deleteKeys = (redis: Redis, prefix: string) =>
  Effect.promise(async () => {
    let cursor = "0"
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 500)
      cursor = next
      if (keys.length > 0) await redis.del(...keys)
    } while (cursor !== "0")
  })

/** Removes the prefix's keys when the layer (or test scope) closes. */
export const cleanupLayer = (prefix: string) =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const redis = yield* admin
    yield* Effect.addFinalizer(() => deleteKeys(redis, prefix))
  }))

/** The connections whose `CLIENT SETNAME` starts with `name`, as `{ id, name }`. */
export const clientsNamed = (redis: Redis, name: string) =>
  Effect.promise(async () => {
    const list = (await redis.client("LIST")) as string
    return list.split("\n").flatMap((line) => {
      const id = /(?:^| )id=(\d+)/.exec(line)?.[1]
      const n = /(?:^| )name=(\S*)/.exec(line)?.[1]
      return id !== undefined && n !== undefined && n.startsWith(name) ? [{ id, name: n }] : []
    })
  })

/** Collects `n` deliveries of a stream or fails after `within`. */
export const takeN = <E>(
  stream: import("effect").Stream.Stream<import("@bulwark/core").Delivery.Delivery, E>,
  n: number,
  within: import("effect").Duration.DurationInput = "10 seconds"
) =>
  Stream.take(stream, n).pipe(
    Stream.runCollect,
    Effect.map(Chunk.toReadonlyArray),
    Effect.timeoutFail({ duration: within, onTimeout: () => new Error(`expected ${n} deliveries within ${String(within)}`) })
  )

/** Whether nothing arrives on the stream within `period`. */
export const nothingWithin = <E>(
  stream: import("effect").Stream.Stream<import("@bulwark/core").Delivery.Delivery, E>,
  period: import("effect").Duration.DurationInput
) =>
  Stream.runHead(stream).pipe(
    Effect.timeout(period),
    Effect.as(false),
    Effect.catchTag("TimeoutException", () => Effect.succeed(true))
  )
