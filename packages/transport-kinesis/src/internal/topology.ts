/**
 * Streams and shards: a topic's stream name, creating a stream on first use (and waiting until it is ACTIVE),
 * and listing its shards with their parents (a reshard closes shards and opens children).
 */
import {
  CreateStreamCommand,
  DescribeStreamSummaryCommand,
  type KinesisClient,
  ListShardsCommand,
  type Shard
} from "@aws-sdk/client-kinesis"
import { Effect, Schedule } from "effect"
import { call, CallError, InvalidName, nameOf } from "./connection.js"

/**
 * The stream name of a topic: characters Kinesis does not allow (anything but letters, digits, `_ . -`) are
 * written `_xx` (hex), `_` itself included, so two topics never share a stream.
 */
export const streamName = (prefix: string, topic: string): string => {
  let name = prefix
  for (const char of topic) {
    if (/[A-Za-z0-9.-]/.test(char)) name += char
    else for (const byte of Buffer.from(char, "utf8")) name += `_${byte.toString(16).padStart(2, "0")}`
  }
  return name
}

/** The stream name of `topic`, or `InvalidName` when Kinesis would refuse it. */
export const validStream = (prefix: string, topic: string): Effect.Effect<string, InvalidName> => {
  const stream = streamName(prefix, topic)
  return stream.length > 0 && stream.length <= 128 ? Effect.succeed(stream) : Effect.fail(new InvalidName({ topic, stream }))
}

const status = (client: KinesisClient, stream: string) =>
  Effect.map(
    call((abortSignal) => client.send(new DescribeStreamSummaryCommand({ StreamName: stream }), { abortSignal })),
    (out) => out.StreamDescriptionSummary?.StreamStatus
  )

/** Creates the stream if it is missing and waits until it takes writes and reads (ACTIVE or UPDATING). */
export const ensureStream = (client: KinesisClient, stream: string, shardCount: number): Effect.Effect<void, CallError> =>
  Effect.gen(function*() {
    yield* call((abortSignal) => client.send(new CreateStreamCommand({ StreamName: stream, ShardCount: shardCount }), { abortSignal })).pipe(
      // Made by another process or an earlier run: used as it is, whatever its shard count.
      Effect.catchIf((error) => nameOf(error.cause) === "ResourceInUseException", () => Effect.void)
    )
    yield* status(client, stream).pipe(
      Effect.flatMap((s) =>
        s === "ACTIVE" || s === "UPDATING" ? Effect.void : Effect.fail(new CallError({ cause: `stream ${stream} is ${s ?? "unknown"}` }))
      ),
      // AWS takes seconds to create a stream; the emulator, none.
      Effect.retry({ schedule: Schedule.spaced("100 millis").pipe(Schedule.upTo("2 minutes")) })
    )
  })

/** Every shard of the stream the service still lists (open and closed ones within retention). */
export const listShards = (client: KinesisClient, stream: string): Effect.Effect<ReadonlyArray<Shard>, CallError> =>
  Effect.gen(function*() {
    const shards: Array<Shard> = []
    let next: string | undefined
    do {
      const token = next
      const out = yield* call((abortSignal) =>
        client.send(new ListShardsCommand(token === undefined ? { StreamName: stream } : { NextToken: token }), { abortSignal })
      )
      shards.push(...(out.Shards ?? []))
      next = out.NextToken
    } while (next !== undefined)
    return shards
  })
