/**
 * Publishing: messages become framed records (`codec.ts`) sent with `PutRecords`. The publishes made in one
 * turn of the event loop to one stream go out together (`Driver.batcher`), split within PutRecords' limits
 * (500 records, 5 MiB) and sent in order. Kinesis answers a PutRecords record by record: the records it
 * refused (throttled, mostly) are sent again, alone, with a backoff, until all are in or the time is up.
 */
import { type KinesisClient, PutRecordsCommand, type PutRecordsRequestEntry } from "@aws-sdk/client-kinesis"
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { Duration, Effect } from "effect"
import { encode, entrySize } from "./codec.js"
import { CallError, isMissing, isTransient, type Settings } from "./connection.js"

// PutRecords: 500 records and 5 MiB per call; 4.5 MiB leaves room for the request's own framing.
const maxRecords = 500
const maxBytes = 4.5 * 1024 * 1024

/** Splits entries into PutRecords calls within the service's limits, in order. */
export const chunks = (entries: ReadonlyArray<PutRecordsRequestEntry>): Array<Array<PutRecordsRequestEntry>> =>
  Driver.chunked(entries, { maxItems: maxRecords, maxBytes, size: entrySize })

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

/** Sends one chunk; the records refused are sent again with a backoff until `deadline`. */
export const putRecords = async (
  client: KinesisClient,
  stream: string,
  entries: ReadonlyArray<PutRecordsRequestEntry>,
  deadline: number
): Promise<void> => {
  let pending = entries
  for (let attempt = 0;; attempt++) {
    let failed: Array<PutRecordsRequestEntry> = []
    let cause: unknown
    try {
      const out = await client.send(new PutRecordsCommand({ StreamName: stream, Records: [...pending] }))
      const results = out.Records ?? []
      if ((out.FailedRecordCount ?? 0) === 0 && results.length === pending.length) return
      failed = pending.filter((_, i) => results[i]?.ErrorCode !== undefined || results[i]?.SequenceNumber === undefined)
      cause = results.find((r) => r.ErrorCode !== undefined) ?? `the service stored ${pending.length - failed.length} of ${pending.length} records`
    } catch (error) {
      if (!isTransient(error)) throw error
      failed = [...pending]
      cause = error
    }
    if (failed.length === 0) return
    if (Date.now() >= deadline) throw cause
    pending = failed
    await sleep(Math.min(1000, 50 * 2 ** attempt) * (0.5 + Math.random() / 2))
  }
}

/** `publish` for the driver and the dead-letter copies; `streamOf` creates a topic's stream once. */
export const makePublisher = (
  client: KinesisClient,
  settings: Settings,
  streamOf: (topic: string, refresh?: boolean) => Effect.Effect<string, CallError | Transport.PublishError["cause"]>
) => {
  const batchers = new Map<string, (entries: ReadonlyArray<PutRecordsRequestEntry>) => Promise<void>>()
  const batcherOf = (stream: string) => {
    let found = batchers.get(stream)
    if (found === undefined) {
      found = Driver.batcher<ReadonlyArray<PutRecordsRequestEntry>>(async (publishes) => {
        const deadline = Date.now() + Duration.toMillis(settings.reconnectTimeout)
        // One after the other: a key's records land in the order they were published.
        for (const chunk of chunks(publishes.flat())) await putRecords(client, stream, chunk, deadline)
      })
      batchers.set(stream, found)
    }
    return found
  }
  const send = (stream: string, entries: ReadonlyArray<PutRecordsRequestEntry>) =>
    Effect.tryPromise({ try: () => batcherOf(stream)(entries), catch: (cause) => new CallError({ cause }) })

  return (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>): Effect.Effect<void, Transport.PublishError> => {
    if (messages.length === 0) return Effect.void
    const entries = messages.map(encode)
    return streamOf(topic).pipe(
      Effect.flatMap((stream) => send(stream, entries)),
      // The stream was deleted behind the transport's back: create it again, once.
      Effect.catchIf(
        (error) => error instanceof CallError && isMissing(error.cause),
        () => Effect.flatMap(streamOf(topic, true), (stream) => send(stream, entries))
      ),
      Effect.mapError((error) => new Transport.PublishError({ topic, cause: error instanceof CallError ? error.cause : error })),
      Driver.inRealTime
    )
  }
}
