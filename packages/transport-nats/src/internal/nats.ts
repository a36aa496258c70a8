/**
 * The NATS JetStream driver assembled from its parts: the connection (`connection.ts`), the topology
 * (`topology.ts`), publishing (`publisher.ts`) and consuming (`session.ts`, over the pull protocol in
 * `pull.ts`); shared protocol pieces are in `protocol.ts`.
 */
import type { Transport } from "@bulwark/transport"
import { Duration, Effect, type Scope } from "effect"
import type { NatsConnection } from "nats"
import type { Options } from "../NatsTransport.js"
import * as Connection from "./connection.js"
import * as Names from "./names.js"
import { type ConnectionError, type OptionsError, resolve } from "./protocol.js"
import * as Publisher from "./publisher.js"
import type { Puller } from "./pull.js"
import * as Session from "./session.js"
import * as Topology from "./topology.js"

export {
  ConnectionError,
  idHeader,
  InvalidMessageError,
  keyHeader,
  msgIdHeader,
  OptionsError,
  redactServer,
  type Resolved
} from "./protocol.js"

/** The NATS connection and the transport built on it. */
export interface NatsTransport extends Transport.Driver {
  readonly connection: NatsConnection
  /** The stream and subject a topic maps to. */
  readonly names: (topic: string) => Names.TopicNames | string
}

export const make = (options: Options = {}): Effect.Effect<NatsTransport, ConnectionError | OptionsError, Scope.Scope> =>
  Effect.gen(function*() {
    const resolved = yield* resolve(options)
    const { connection, jsm } = yield* Connection.open(resolved, options)
    const js = connection.jetstream({ timeout: resolved.requestTimeout })
    const pullers = new Map<Puller, Session.ConsumerRef>()

    const features: Transport.Features = {
      orderedPerKey: false,
      delayedNack: true,
      visibilityTimeout: Duration.millis(resolved.ackWait),
      deadLetterTopic: true,
      consumerGroups: true,
      persistent: true,
      ...(resolved.dedupeWindow > 0 ? { dedupeWindow: Duration.millis(resolved.dedupeWindow) } : {})
    }

    const names = (topic: string) => Names.topicNames(resolved.prefix, topic)
    const topology = Topology.make(jsm, resolved)
    const publish = Publisher.make(js, topology, resolved, names)
    const context: Session.SessionContext = { connection, resolved, topology, publish, names, pullers }
    // Pull requests waiting on the server may have died with the old connection: ask again.
    yield* Connection.watchConnection(connection, resolved.servers, {
      onDisconnect: () => Session.disconnected(context),
      onReconnect: Session.reconnected(context)
    })

    return {
      connection,
      features,
      publish,
      subscribe: (topic: string, subscribeOptions?: Transport.SubscribeOptions) => Session.subscribe(context, topic, subscribeOptions),
      names
    }
  })
