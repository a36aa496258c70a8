/**
 * Publishing to JetStream: each message with `Nats-Msg-Id` = its id (the stream's dedupe), acknowledged by the
 * stream; up to a window of publishes in flight at once.
 */
import { Transport } from "@bulwark/transport"
import { Effect } from "effect"
import type { JetStreamClient, JetStreamPublishOptions, MsgHdrs } from "nats"
import { buildHeaders, idHeader, InvalidMessageError, isNoResponders, type Resolved } from "./protocol.js"
import type * as Names from "./names.js"
import type { Topology } from "./topology.js"

const publishWindow = 1024

/** `Publisher.publish` over the JetStream client. */
export const make = (
  js: JetStreamClient,
  topology: Topology,
  resolved: Resolved,
  names: (topic: string) => Names.TopicNames | string
) => {
  const publishAll = async (
    target: Names.TopicNames,
    messages: ReadonlyArray<Transport.OutgoingMessage>,
    headers: ReadonlyArray<MsgHdrs>,
    rejectDuplicates: boolean
  ) => {
    let inFlight: Array<Promise<{ readonly duplicate: boolean }>> = []
    let duplicate: string | undefined
    let done = 0
    const settle = async () => {
      const acks = await Promise.all(inFlight)
      const first = acks.findIndex((ack) => ack.duplicate)
      if (first >= 0 && duplicate === undefined) duplicate = messages[done + first]!.id
      done += inFlight.length
      inFlight = []
    }
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i]!
      if (message.id !== "" && resolved.dedupeWindow === 0) headers[i]!.set(idHeader, message.id)
      const publishOptions: Partial<JetStreamPublishOptions> = message.id === "" || resolved.dedupeWindow === 0
        ? { headers: headers[i]! }
        : { headers: headers[i]!, msgID: message.id }
      inFlight.push(js.publish(target.subject, message.payload, publishOptions))
      if (inFlight.length >= publishWindow) await settle()
    }
    await settle()
    // The stream acknowledged it without storing it: it already held a message with this id.
    if (rejectDuplicates && duplicate !== undefined) throw new Transport.DuplicateMessage({ id: duplicate })
  }

  const publish = (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>, options?: Transport.PublishOptions) =>
    Effect.suspend(() => {
      const rejectDuplicates = options?.rejectDuplicates === true
      if (messages.length === 0) return Effect.void
      const target = names(topic)
      if (typeof target === "string") {
        return Effect.fail(new Transport.PublishError({ topic, cause: new InvalidMessageError({ reason: target }) }))
      }
      const headers: Array<MsgHdrs> = []
      for (const message of messages) {
        const built = buildHeaders(message)
        if (built instanceof InvalidMessageError) return Effect.fail(new Transport.PublishError({ topic, cause: built }))
        headers.push(built)
      }
      return Effect.tryPromise({
        try: async () => {
          await topology.ensureStream(target)
          try {
            await publishAll(target, messages, headers, rejectDuplicates)
          } catch (cause) {
            if (!isNoResponders(cause)) throw cause
            // The stream was deleted under us: recreate it once. Already stored messages dedupe by id.
            topology.forgetStream(target.stream)
            await topology.ensureStream(target)
            await publishAll(target, messages, headers, rejectDuplicates)
          }
        },
        catch: (cause) => new Transport.PublishError({ topic, cause })
      })
    })

  return publish
}
