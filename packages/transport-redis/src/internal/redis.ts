/**
 * The Redis Streams driver assembled from its parts on the shared driver base: the protocol and connection
 * (`protocol.ts`), the ack queue (`acks.ts`), publishing (`publisher.ts`) and consuming (`session.ts`).
 */
import type { Transport } from "@bulwark/transport"
import { Duration, Effect } from "effect"
import * as Acks from "./acks.js"
import { command, connect, type Settings } from "./protocol.js"
import * as Publisher from "./publisher.js"
import * as Session from "./session.js"

export { delayedKey, Fields, redactUrl, RedisConnectionError, type Settings, streamKey } from "./protocol.js"

export const make = (settings: Settings) =>
  Effect.gen(function*() {
    const redis = yield* connect(settings, `${settings.connectionName}:commands`)
    // Unknown (INFO denied by an ACL) counts as not persistent: declaring durability we cannot see would lie.
    const persistent = settings.persistent ?? (yield* command(() => redis.info("persistence")).pipe(
      Effect.map((info) => /^aof_enabled:1\s*$/m.test(info)),
      Effect.catchAll((error) =>
        Effect.as(Effect.logWarning("could not read INFO persistence; declaring persistent: false", error.cause), false)
      )
    ))

    const features: Transport.Features = {
      orderedPerKey: false,
      delayedNack: true,
      visibilityTimeout: settings.visibilityTimeout,
      deadLetterTopic: true,
      consumerGroups: true,
      persistent
    }

    const context: Session.SessionContext = { redis, settings, acks: yield* Acks.make(redis, Duration.toMillis(settings.socketTimeout)) }
    return {
      features,
      publish: Publisher.make(redis, settings),
      subscribe: (topic: string, options?: Transport.SubscribeOptions) => Session.subscribe(context, topic, options)
    }
  })
