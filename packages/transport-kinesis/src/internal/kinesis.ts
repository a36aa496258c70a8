/**
 * The Kinesis driver wired from its parts: the client (`connection.ts`), streams (`topology.ts`), the publisher
 * (`publisher.ts`) and one reader per consumer group and stream (`reader.ts`), whose positions live in the
 * `CheckpointStore`.
 */
import { Delivery } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { Effect, Either, Runtime, type Scope, Stream } from "effect"
import { hostname } from "node:os"
import { randomUUID } from "node:crypto"
import { CheckpointStore } from "../CheckpointStore.js"
import { CallError, connect, type InvalidName, type KinesisConnectionError, type Settings } from "./connection.js"
import { makePublisher } from "./publisher.js"
import { makeReader, type Reader } from "./reader.js"
import { ensureStream, validStream } from "./topology.js"

/** The driver's operations and features. */
export interface KinesisDriver extends Transport.Driver {
  /** This process's name in the lease table. */
  readonly owner: string
}

/** Connects and answers the driver; its readers and client close with the scope. */
export const make = (settings: Settings): Effect.Effect<KinesisDriver, KinesisConnectionError, Scope.Scope | CheckpointStore> =>
  Effect.gen(function*() {
    const store = yield* CheckpointStore
    const client = yield* connect(settings)
    const scope = yield* Effect.scope
    const runtime = yield* Effect.runtime<never>()
    const owner = `${hostname()}:${process.pid}:${randomUUID()}`

    // Streams this process created or found, so a publish costs one call. Shared by concurrent callers.
    const streams = new Map<string, Promise<Either.Either<string, CallError | InvalidName>>>()
    const streamOf = (topic: string, refresh = false): Effect.Effect<string, CallError | InvalidName> =>
      Effect.suspend(() => {
        if (refresh) streams.delete(topic)
        let known = streams.get(topic)
        if (known === undefined) {
          known = Runtime.runPromise(runtime)(Effect.either(
            Effect.flatMap(validStream(settings.streamPrefix, topic), (stream) => Effect.as(ensureStream(client, stream, settings.shardCount), stream))
          ))
          streams.set(topic, known)
        }
        const pending = known
        return Effect.flatMap(Effect.promise(() => pending), (result) =>
          Either.isRight(result)
            ? Effect.succeed(result.right)
            : Effect.zipRight(Effect.sync(() => {
              if (streams.get(topic) === pending) streams.delete(topic)
            }), Effect.fail(result.left)))
      })

    const publish = makePublisher(client, settings, streamOf)

    const readers = new Map<string, Reader>()
    const readerOf = (topic: string, group: string) =>
      Effect.flatMap(streamOf(topic), (stream) => {
        const id = `${stream}\u0000${group}`
        const known = readers.get(id)
        if (known !== undefined) return Effect.succeed(known)
        let made: Reader | undefined
        return Effect.tap(
          makeReader({
            client,
            settings,
            store,
            topic,
            stream,
            group,
            owner,
            deadLetter: (copy) => publish(Delivery.deadLetterTopic(topic), [copy]),
            onClose: () => {
              if (made !== undefined && readers.get(id) === made) readers.delete(id)
            }
          }, scope),
          (reader) => Effect.sync(() => {
            made = reader
            readers.set(id, reader)
          })
        )
      })

    const attached = (topic: string, group: string): Effect.Effect<Reader, CallError | InvalidName, Scope.Scope> =>
      Effect.flatMap(readerOf(topic, group), (reader) =>
        Effect.flatMap(
          Effect.acquireRelease(reader.attach, (joined) => (joined ? reader.detach : Effect.void)),
          (joined) => (joined ? Effect.succeed(reader) : attached(topic, group))
        ))

    const subscribe = (topic: string, options?: Transport.SubscribeOptions): Stream.Stream<Delivery.Delivery, Transport.SubscribeError> =>
      Stream.unwrapScoped(
        attached(topic, options?.group ?? "default").pipe(
          Effect.map((reader) => Stream.repeatEffectChunk(reader.take(settings.maxBatch))),
          Effect.mapError((error) => new Transport.SubscribeError({ topic, cause: error instanceof CallError ? error.cause : error }))
        )
      )

    const features: Transport.Features = {
      // Within a shard (a key's records always share one), a key's next record waits for the previous one.
      orderedPerKey: true,
      delayedNack: true,
      visibilityTimeout: settings.visibilityTimeout,
      deadLetterTopic: true,
      // A group is a set of leases and checkpoints over the one stream: every group reads every record.
      consumerGroups: true,
      // Records stay in the stream for its retention period (24 h by default); a restart resumes at the
      // checkpoint with a persistent store, at the trim horizon (again, nothing lost) with the memory one.
      persistent: true
    }

    return { features, publish, subscribe, owner }
  })
