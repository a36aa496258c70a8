/**
 * The RabbitMQ driver assembled from its parts on the shared driver base: the supervised connection
 * (`connection.ts`), the topology (`topology.ts`), publishing (`publisher.ts`) and consuming (`session.ts`).
 */
import type { Features } from "@bulwark/transport/Transport"
import { Duration, Effect } from "effect"
import type { Options } from "../AmqpTransport.js"
import * as Connection from "./connection.js"
import { defaultUrl, redactUrl } from "./protocol.js"
import * as Publisher from "./publisher.js"
import * as Session from "./session.js"
import * as Topology from "./topology.js"

export {
  AmqpConnectionError,
  AmqpOperationError,
  attemptOf,
  defaultUrl,
  delayBucket,
  delayQueueName,
  exchangeName,
  InternalHeaders,
  queueName,
  redactUrl
} from "./protocol.js"

export const make = (options: Options = {}) =>
  Effect.gen(function*() {
    const url = options.url ?? defaultUrl
    const connectTimeout = Duration.decode(options.connectTimeout ?? "5 seconds")
    const heartbeat = Duration.decode(options.heartbeat ?? "10 seconds")
    const scope = yield* Effect.scope

    const features: Features = {
      orderedPerKey: false,
      delayedNack: true,
      visibilityTimeout: Duration.decode(options.visibilityTimeout ?? "30 seconds"),
      deadLetterTopic: true,
      consumerGroups: true,
      persistent: true
    }

    const connection = yield* Connection.supervised({
      url,
      shownUrl: redactUrl(url),
      connectTimeout,
      heartbeatSeconds: Math.max(1, Math.round(Duration.toSeconds(heartbeat)))
    })
    const topology = Topology.make(options.declareDefaultGroup ?? true)
    const publishTimeout = Duration.decode(options.publishTimeout ?? "30 seconds")
    const publisher = Publisher.make(connection, topology, connectTimeout, publishTimeout)
    const context: Session.SessionContext = {
      connection,
      topology,
      publisher,
      features,
      prefetch: options.prefetch ?? 100,
      scope
    }

    return {
      features,
      publish: publisher.publish,
      subscribe: (topic: string, subscribeOptions?: import("@bulwark/transport/Transport").SubscribeOptions) =>
        Session.subscribe(context, topic, subscribeOptions),
      /** The live connection, waiting (up to the connect timeout) while a lost one is re-established. */
      connection: connection.current,
      /** Runs `use` on a fresh channel of the live connection, closing it afterwards. */
      withChannel: publisher.withChannel,
      declared: Effect.sync(() => ({ exchanges: [...topology.declaredExchanges], queues: [...topology.declaredQueues] })),
      deleteDeclared: (predicate: (name: string) => boolean) => Topology.deleteDeclared(topology, publisher.withChannel, predicate)
    }
  })
