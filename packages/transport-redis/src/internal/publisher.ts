/** Publishing to Redis Streams: one `XADD` per message, a batch in one `MULTI`/`EXEC`. */
import { Transport } from "@bulwark/transport"
import { Duration, Effect } from "effect"
import type { Redis } from "ioredis"
import { messageFields, type Settings, streamKey, within } from "./protocol.js"

/** `Publisher.publish` over the command connection. */
export const make = (redis: Redis, settings: Settings) => {
  const timeoutMillis = Duration.toMillis(settings.socketTimeout)
  const maxLength = settings.maxLength === undefined ? "0" : String(settings.maxLength)
  const xaddArgs = (key: string, fields: ReadonlyArray<string | Buffer>): Array<string | Buffer> =>
    settings.maxLength === undefined ? [key, "*", ...fields] : [key, "MAXLEN", "~", maxLength, "*", ...fields]

  const publish = (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) => {
    if (messages.length === 0) return Effect.void
    const key = streamKey(settings.keyPrefix, topic)
    const args = messages.map((m) => xaddArgs(key, messageFields({ ...m, topic }, m.headers)))
    return Effect.tryPromise({
      try: async () => {
        if (args.length === 1) {
          await within(redis.call("XADD", args[0]!), timeoutMillis)
          return
        }
        // MULTI: the batch is published whole or not at all.
        const transaction = redis.multi()
        for (const a of args) transaction.call("XADD", a)
        const results = await within(transaction.exec(), timeoutMillis)
        if (results === null) throw new Error("transaction aborted")
        for (const [error] of results) if (error) throw error
      },
      catch: (cause) => new Transport.PublishError({ topic, cause })
    })
  }
  return publish
}
