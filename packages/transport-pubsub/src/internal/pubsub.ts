/**
 * The Pub/Sub driver's protocol parts, as top-level functions over the official client's generated (GAPIC)
 * `PublisherClient` and `SubscriberClient`: names, message encoding, resource creation, publish, pull and the
 * settle calls. `make` wires them into a driver.
 */
import { Delivery, Failure } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { type ClientConfig, PubSub, v1 } from "@google-cloud/pubsub"
import { Chunk, Data, Duration, Effect, Either, Runtime, Schedule, Scope, Stream } from "effect"

/** Settings with every default applied. */
export interface Settings {
  readonly projectId: string
  readonly apiEndpoint: string | undefined
  readonly clientConfig: ClientConfig
  /** Whole seconds, 1 to 600. */
  readonly visibilitySeconds: number
  readonly connectTimeout: Duration.Duration
  readonly reconnectTimeout: Duration.Duration
  readonly publishTimeout: Duration.Duration
  readonly pullTimeout: Duration.Duration
  readonly maxMessages: number
  readonly maxDeliveryAttempts: number
  readonly subscribeOnPublish: boolean
  readonly persistent: boolean | undefined
  readonly confirmAcks: boolean
}

/** The service could not be reached, or the settings are unusable, when the transport started. */
export class PubSubConnectionError extends Data.TaggedError("PubSubConnectionError")<{
  /** The endpoint as given (`default` for Google's). */
  readonly endpoint: string
  readonly cause: unknown
}> {
  // The service may come back: a supervisor retrying the start is right to.
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }

  override get message(): string {
    const cause = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `cannot reach Pub/Sub at ${this.endpoint}: ${cause}`
  }
}

/** A topic or group name Pub/Sub does not accept (see {@link validName}). Permanent. */
export class InvalidName extends Data.TaggedError("InvalidName")<{
  readonly kind: "topic" | "subscription"
  readonly name: string
}> {
  // The same name fails the same way every time: nothing to retry.
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: "schema" }
  }

  override get message(): string {
    return `${this.kind} name ${JSON.stringify(this.name)} is not valid for Pub/Sub: 3 to 255 characters of ` +
      `letters, digits and - _ . ~ + %, starting with a letter and not with "goog"`
  }
}

/** Attribute names the transport writes; a header of the same name is not carried. */
export const Attributes = {
  id: "bulwark-id",
  key: "bulwark-key",
  /** Set when the headers travel at the front of the data (they did not fit Pub/Sub's attribute limits). */
  framed: "bulwark-framed"
} as const

// Pub/Sub's limits on attributes: beyond them the headers are framed into the data instead.
const maxAttributes = 100
const maxAttributeKeyBytes = 256
const maxAttributeValueBytes = 1024
// One publish request carries at most 1000 messages and 10 MB.
const maxBatchMessages = 1000
const maxBatchBytes = 9 * 1024 * 1024
// One acknowledge or modifyAckDeadline request: ack ids are ~200 bytes, requests stay well under 512 KB.
const maxAckIds = 1000

const namePattern = /^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$/

/** Whether Pub/Sub accepts `name` as a topic or subscription id. */
export const validName = (name: string): boolean => namePattern.test(name) && !name.toLowerCase().startsWith("goog")

/** The subscription id of a topic's group. `~` because topic names may contain dots. */
export const subscriptionId = (topic: string, group: string): string => `${topic}~${group}`

export const topicPath = (projectId: string, topic: string) => `projects/${projectId}/topics/${topic}`
export const subscriptionPath = (projectId: string, id: string) => `projects/${projectId}/subscriptions/${id}`

/** A message as Pub/Sub's publish call takes it. */
export interface PubsubMessage {
  readonly data: Buffer
  readonly attributes: Record<string, string>
}

const bytes = (text: string) => Buffer.byteLength(text, "utf8")

// A string of n UTF-16 units takes at most 3n bytes in UTF-8: most names and values are measured by that alone.
const fitsBytes = (text: string, max: number): boolean => text.length * 3 <= max || bytes(text) <= max

const reservedPrefix = /^goog/i

/**
 * The attributes of a message whose headers Pub/Sub accepts as attributes (at most 100 with the transport's own,
 * names and values within its byte limits), built in one pass: the headers, then `bulwark-id` and `bulwark-key`
 * (a header of one of the transport's names is not carried). `undefined` when they do not fit.
 */
const attributesOf = (message: Transport.OutgoingMessage): Record<string, string> | undefined => {
  if (!fitsBytes(message.id, maxAttributeValueBytes) || !fitsBytes(message.key, maxAttributeValueBytes)) return undefined
  const headers = message.headers
  const attributes: Record<string, string> = {}
  let count = 2
  for (const name in headers) {
    if (!Object.hasOwn(headers, name)) continue
    const value = headers[name]!
    if (++count > maxAttributes) return undefined
    if (name === "" || reservedPrefix.test(name) || !fitsBytes(name, maxAttributeKeyBytes)) return undefined
    if (!fitsBytes(value, maxAttributeValueBytes)) return undefined
    if (name === Attributes.id || name === Attributes.key || name === Attributes.framed) continue
    Driver.setHeader(attributes, name, value)
  }
  attributes[Attributes.id] = message.id
  if (message.key !== "") attributes[Attributes.key] = message.key
  return attributes
}

// A payload that is a Buffer already is sent as it is, not wrapped in a second view.
const asBuffer = (payload: Uint8Array): Buffer =>
  Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)

/**
 * Encodes a message: headers as attributes, id and key in attributes of their own, the payload as data. Headers
 * Pub/Sub would refuse as attributes (over 100, a value over 1 KB: a long dead-letter reason) go, all of them,
 * in front of the payload instead (4-byte length, JSON), so nothing is cut.
 */
export const encode = (message: Transport.OutgoingMessage): PubsubMessage => {
  const attributes = attributesOf(message)
  if (attributes !== undefined) return { data: asBuffer(message.payload), attributes }
  const head = Buffer.from(JSON.stringify({ id: message.id, key: message.key, headers: message.headers }), "utf8")
  const length = Buffer.alloc(4)
  length.writeUInt32BE(head.length)
  return { data: Buffer.concat([length, head, asBuffer(message.payload)]), attributes: { [Attributes.framed]: "1" } }
}

/** A message as a pull returns it (the fields the transport reads). */
export interface Received {
  readonly ackId?: string | null
  readonly deliveryAttempt?: number | null
  readonly message?: {
    readonly messageId?: string | null
    readonly data?: Uint8Array | string | null
    readonly attributes?: { readonly [name: string]: string } | null
  } | null
}

// The client hands data over as a Buffer already: kept as it is, not wrapped in a second view per message.
const dataOf = (data: Uint8Array | string | null | undefined): Buffer =>
  data === null || data === undefined
    ? Buffer.alloc(0)
    : typeof data === "string"
    ? Buffer.from(data, "base64")
    : Buffer.isBuffer(data)
    ? data
    : asBuffer(data)

/** The attributes other than the transport's own, as headers; built in one pass, as every delivery needs it. */
const headersOf = (attributes: { readonly [name: string]: string }): Record<string, string> => {
  const headers: Record<string, string> = {}
  for (const name in attributes) {
    if (name === Attributes.id || name === Attributes.key || !Object.hasOwn(attributes, name)) continue
    Driver.setHeader(headers, name, attributes[name]!)
  }
  return headers
}

/** Decodes what {@link encode} wrote; a message published by another tool keeps its attributes as headers. */
export const decode = (topic: string, received: Received): Delivery.Message => {
  const message = received.message ?? {}
  const attributes = message.attributes ?? {}
  const data = dataOf(message.data)
  const serviceId = message.messageId ?? ""
  if (attributes[Attributes.framed] === "1" && data.length >= 4) {
    const length = data.readUInt32BE(0)
    try {
      const head = JSON.parse(data.subarray(4, 4 + length).toString("utf8")) as {
        id?: unknown
        key?: unknown
        headers?: Record<string, unknown>
      }
      // fromEntries defines own properties: a header named `__proto__` stays a header.
      const headers = Object.fromEntries(Object.entries(head.headers ?? {}).map(([name, value]) => [name, String(value)]))
      return {
        id: typeof head.id === "string" ? head.id : serviceId,
        topic,
        key: typeof head.key === "string" ? head.key : "",
        payload: data.subarray(4 + length),
        headers
      }
    } catch {
      // Not a frame after all: delivered as it is, with the marker left in the headers so it can be seen.
    }
  }
  return { id: attributes[Attributes.id] ?? serviceId, topic, key: attributes[Attributes.key] ?? "", payload: data, headers: headersOf(attributes) }
}

/** Splits a publish into requests within Pub/Sub's limits, in order. */
export const batches = (messages: ReadonlyArray<PubsubMessage>): Array<Array<PubsubMessage>> =>
  messages.length <= maxBatchMessages && withinBytes(messages)
    ? [messages as Array<PubsubMessage>]
    : Driver.chunked(messages, { maxItems: maxBatchMessages, maxBytes: maxBatchBytes, size: messageSize })

// Whether the messages surely fit one request, by the UTF-8 bound of their attributes (3 bytes per UTF-16 unit):
// a usual publish is measured without encoding any attribute.
const withinBytes = (messages: ReadonlyArray<PubsubMessage>): boolean => {
  let size = 0
  for (const message of messages) {
    size += message.data.length
    for (const name in message.attributes) size += 3 * (name.length + message.attributes[name]!.length)
    if (size > maxBatchBytes) return false
  }
  return true
}

const messageSize = (message: PubsubMessage): number => {
  let size = message.data.length
  for (const name in message.attributes) size += bytes(name) + bytes(message.attributes[name]!)
  return size
}

/** gRPC status codes the transport tells apart. */
export const Code = { deadlineExceeded: 4, notFound: 5, alreadyExists: 6, unavailable: 14 } as const

const codeOf = (error: unknown): number | undefined => {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === "number" ? code : undefined
}

/** Failures worth retrying: the service or the network, not the request. */
export const isTransient = (error: unknown): boolean => {
  const code = codeOf(error)
  // 1 cancelled, 4 deadline, 8 resource exhausted, 10 aborted, 13 internal, 14 unavailable.
  return code === undefined || code === 1 || code === 4 || code === 8 || code === 10 || code === 13 || code === 14
}

/** A call to the service failed; `cause` is the client's error (with its gRPC `code`). */
export class CallError extends Data.TaggedError("CallError")<{ readonly cause: unknown }> {}

type Cancellable<A> = Promise<A> & { cancel?: () => void }

/** A wall-clock bound on a call: past `millis` it is cancelled and fails with `onTimeout()`. */
export interface Bound {
  readonly millis: number
  readonly onTimeout: () => CallError
}

/**
 * Runs a client call; interrupting it cancels the call. With a `bound`, one timer per call cancels it once the
 * bound passes, where `Effect.timeoutFail` would fork a fiber to race it on every publish.
 */
export const call = <A>(run: () => Promise<A>, bound?: Bound): Effect.Effect<A, CallError> =>
  Effect.async<A, CallError>((resume) => {
    let done = false
    const promise = run() as Cancellable<A>
    const timer = bound === undefined ? undefined : setTimeout(() => {
      if (done) return
      done = true
      promise.cancel?.()
      resume(Effect.fail(bound.onTimeout()))
    }, bound.millis)
    const settle = (result: Effect.Effect<A, CallError>) => {
      if (done) return
      done = true
      clearTimeout(timer)
      resume(result)
    }
    promise.then((value) => settle(Effect.succeed(value)), (cause: unknown) => settle(Effect.fail(new CallError({ cause }))))
    return Effect.sync(() => {
      done = true
      clearTimeout(timer)
      promise.cancel?.()
    })
  })

/** The two generated clients the transport uses, closed with the scope. */
export interface Clients {
  readonly publisher: v1.PublisherClient
  readonly subscriber: v1.SubscriberClient
  readonly emulator: boolean
}

/**
 * The endpoint as it may appear in logs and errors. It is `host:port`, not a URL, so `Driver.redactUrl` would take
 * `user:` for a scheme: whatever comes before an `@` (credentials someone wrote into it) is masked instead.
 */
const redactEndpoint = (endpoint: string): string => {
  const at = endpoint.lastIndexOf("@")
  return at < 0 ? endpoint : `***@${endpoint.slice(at + 1)}`
}

/** Opens the clients (emulator mode for any endpoint that is not Google's) and checks the service answers. */
export const connect = (settings: Settings): Effect.Effect<Clients, PubSubConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    const endpoint = settings.apiEndpoint === undefined ? "default" : redactEndpoint(settings.apiEndpoint)
    // The handwritten client works out the emulator options (insecure channel, host and port) from the endpoint.
    const options = yield* Effect.try({
      try: () => {
        const pubsub = new PubSub({
          ...settings.clientConfig,
          projectId: settings.projectId,
          ...(settings.apiEndpoint === undefined ? {} : { apiEndpoint: settings.apiEndpoint })
        })
        // `port` is a number once the endpoint is parsed; the generated clients' option type says so.
        const options = pubsub.options as ConstructorParameters<typeof v1.PublisherClient>[0]
        // An emulator needs no credentials; naming the universe spares the auth library a metadata-server
        // lookup (and its warning) that can only fail off Google Cloud.
        return {
          options: pubsub.isEmulator ? { ...options, universeDomain: options?.universeDomain ?? "googleapis.com" } : options,
          emulator: pubsub.isEmulator
        }
      },
      catch: (cause) => new PubSubConnectionError({ endpoint, cause })
    })
    const clients = yield* Effect.acquireRelease(
      Effect.sync(() => ({
        publisher: new v1.PublisherClient(options.options),
        subscriber: new v1.SubscriberClient(options.options),
        emulator: options.emulator
      })),
      (clients) => Effect.promise(() => Promise.allSettled([clients.publisher.close(), clients.subscriber.close()]))
    )
    // Any answer proves the service is there (a missing topic is an answer).
    const timeoutMillis = Duration.toMillis(settings.connectTimeout)
    yield* call(() =>
      clients.publisher.getTopic({ topic: topicPath(settings.projectId, "bulwark-connection-check") }, {
        timeout: timeoutMillis,
        retry: null
      })
    ).pipe(
      Effect.catchIf((error) => codeOf(error.cause) === Code.notFound, () => Effect.void),
      Effect.timeoutFail({
        duration: Duration.sum(settings.connectTimeout, Duration.seconds(1)),
        onTimeout: () => new CallError({ cause: `no answer within ${Duration.format(settings.connectTimeout)}` })
      }),
      Effect.mapError((error) => new PubSubConnectionError({ endpoint, cause: error.cause }))
    )
    return clients
  })

const ignoreExists = <A>(effect: Effect.Effect<A, CallError>) =>
  Effect.catchIf(Effect.asVoid(effect), (error) => codeOf(error.cause) === Code.alreadyExists, () => Effect.void)

/** Creates the topic unless it exists. */
export const ensureTopic = (clients: Clients, projectId: string, topic: string) =>
  ignoreExists(call(() => clients.publisher.createTopic({ name: topicPath(projectId, topic) })))

/**
 * Creates a group's subscription unless it exists, with the service's own dead-letter policy (to the topic's
 * `.dlq`, after `maxDeliveryAttempts`), which is also what makes Pub/Sub count delivery attempts. The `.dlq`
 * topic and its default subscription are created first, so nothing forwarded there is dropped.
 */
export const ensureSubscription = (clients: Clients, settings: Settings, topic: string, group: string) =>
  Effect.gen(function*() {
    const deadLetter = Delivery.deadLetterTopic(topic)
    yield* ensureTopic(clients, settings.projectId, topic)
    const policy = validName(deadLetter)
    if (policy) {
      yield* ensureTopic(clients, settings.projectId, deadLetter)
      yield* createSubscription(clients, settings, deadLetter, "default", false)
    }
    yield* createSubscription(clients, settings, topic, group, policy)
  })

const createSubscription = (clients: Clients, settings: Settings, topic: string, group: string, withPolicy: boolean) =>
  ignoreExists(call(() =>
    clients.subscriber.createSubscription({
      name: subscriptionPath(settings.projectId, subscriptionId(topic, group)),
      topic: topicPath(settings.projectId, topic),
      // Pub/Sub's minimum is 10 s; a shorter visibility timeout is set per pull (modifyAckDeadline).
      ackDeadlineSeconds: Math.max(10, settings.visibilitySeconds),
      ...(withPolicy
        ? {
          deadLetterPolicy: {
            deadLetterTopic: topicPath(settings.projectId, Delivery.deadLetterTopic(topic)),
            maxDeliveryAttempts: settings.maxDeliveryAttempts
          }
        }
        : {})
    })
  ))

/** Publishes one request's messages; fails unless the service returned an id for each. */
export const publishBatch = (
  clients: Clients,
  settings: Pick<Settings, "projectId" | "publishTimeout">,
  topic: string,
  messages: ReadonlyArray<PubsubMessage>
) =>
  Effect.flatMap(
    // The client's own retries (up to 10 minutes by default) stop here: a service that never answers makes the
    // publish fail, typed and transient, instead of hanging its caller (the call is cancelled).
    call(
      () => clients.publisher.publish({ topic: topicPath(settings.projectId, topic), messages: messages as Array<PubsubMessage> }),
      {
        millis: Duration.toMillis(settings.publishTimeout),
        onTimeout: () => new CallError({ cause: `no answer to the publish within ${Duration.format(settings.publishTimeout)}` })
      }
    ),
    ([response]) =>
      (response.messageIds?.length ?? 0) === messages.length
        ? Effect.void
        : Effect.fail(new CallError({ cause: `the service confirmed ${response.messageIds?.length ?? 0} of ${messages.length} messages` }))
  )

/** One pull of up to `maxMessages`; an empty answer after `pullTimeout` is not an error. */
export const pull = (clients: Clients, settings: Settings, subscription: string) =>
  call(() =>
    clients.subscriber.pull({ subscription, maxMessages: settings.maxMessages }, {
      timeout: Duration.toMillis(settings.pullTimeout),
      retry: null
    })
  ).pipe(
    Effect.map(([response]) => (response.receivedMessages ?? []) as ReadonlyArray<Received>),
    Effect.catchIf((error) => codeOf(error.cause) === Code.deadlineExceeded, () => Effect.succeed([] as ReadonlyArray<Received>))
  )

/** Sets the ack deadline of `ackIds` (0: deliver again now). */
export const modifyAckDeadline = (clients: Clients, subscription: string, ackIds: ReadonlyArray<string>, seconds: number) =>
  Effect.forEach(chunks(ackIds), (ids) =>
    call(() => clients.subscriber.modifyAckDeadline({ subscription, ackIds: ids, ackDeadlineSeconds: seconds })), { discard: true })

/** Acknowledges `ackIds`. */
export const acknowledge = (clients: Clients, subscription: string, ackIds: ReadonlyArray<string>) =>
  Effect.forEach(chunks(ackIds), (ids) => call(() => clients.subscriber.acknowledge({ subscription, ackIds: ids })), {
    discard: true
  })

const chunks = (ids: ReadonlyArray<string>): Array<Array<string>> => {
  const out: Array<Array<string>> = []
  for (let i = 0; i < ids.length; i += maxAckIds) out.push(ids.slice(i, i + maxAckIds))
  return out
}


const seconds = (delay: Duration.DurationInput | undefined): number =>
  delay === undefined ? 0 : Math.min(600, Math.max(0, Math.ceil(Duration.toMillis(Duration.decode(delay)) / 1000)))

/** The topics and subscriptions a driver has made sure of, each created at most once per process. */
export interface Resources {
  /** The topic exists, and its `default` subscription with `subscribeOnPublish`. */
  readonly prepare: (topic: string) => Effect.Effect<void, CallError>
  /** The topic was found deleted: the next {@link prepare} creates it again. */
  readonly forget: (topic: string) => void
  /** The group's subscription exists (and its topic, and the `.dlq` topic of its dead-letter policy). */
  readonly ensureGroup: (topic: string, group: string) => Effect.Effect<void, CallError>
}

/** Creates the driver over open clients. */
export const make = (settings: Settings) =>
  Effect.gen(function*() {
    const clients = yield* connect(settings)
    const runtime = yield* Effect.runtime<never>()
    const runPromise = <A, E>(effect: Effect.Effect<A, E>) => Runtime.runPromise(runtime)(effect)

    const features: Transport.Features = {
      // The emulator's ordered subscriptions hand every outstanding message out again at each pull, so ordering
      // keys cannot be tested here; not declared (see docs/transports.md).
      orderedPerKey: false,
      delayedNack: true,
      visibilityTimeout: Duration.seconds(settings.visibilitySeconds),
      deadLetterTopic: true,
      consumerGroups: true,
      // The emulator keeps everything in memory; the service itself stores messages durably.
      persistent: settings.persistent ?? !clients.emulator
    }

    // Acks not yet answered by the service. Without `confirmAcks` an ack completes once queued (as the
    // handwritten client's `message.ack()` does), and one that fails means a redelivery, logged; the transport
    // waits for every queued ack before it closes its clients (made after the clients were opened, so that wait
    // runs before they close).
    const track = yield* Driver.unansweredRequests("acknowledgement")

    // Topics and subscriptions this process has created or found, so a publish costs one call and a
    // subscription starts with its first pull (one that finds its subscription deleted creates it again).
    const ready = new Map<string, Promise<Either.Either<void, CallError>>>()
    // Keys whose resource is known to exist: a publish to one costs no effect beyond the call itself.
    const created = new Set<string>()
    const once = (key: string, work: () => Effect.Effect<void, CallError>): Effect.Effect<void, CallError> =>
      Effect.suspend(() => {
        if (created.has(key)) return Effect.void
        let promise = ready.get(key)
        if (promise === undefined) {
          // Shared by concurrent callers, so a resource is created once; a failure is forgotten, to be tried again.
          promise = runPromise(Effect.either(work()))
          ready.set(key, promise)
        }
        const pending = promise
        return Effect.flatMap(Effect.promise(() => pending), (result) =>
          Either.isRight(result)
            ? Effect.sync(() => {
              if (ready.get(key) === pending) created.add(key)
            })
            : Effect.zipRight(
              Effect.sync(() => {
                if (ready.get(key) === pending) ready.delete(key)
              }),
              Effect.fail(result.left)
            ))
      })
    const groupKey = (topic: string, group: string) => `subscription ${subscriptionId(topic, group)}`
    const topicKey = (topic: string) => settings.subscribeOnPublish ? groupKey(topic, "default") : `topic ${topic}`
    const resources: Resources = {
      prepare: (topic) =>
        once(
          topicKey(topic),
          () =>
            settings.subscribeOnPublish
              ? ensureSubscription(clients, settings, topic, "default")
              : ensureTopic(clients, settings.projectId, topic)
        ),
      forget: (topic) => {
        ready.delete(topicKey(topic))
        created.delete(topicKey(topic))
      },
      ensureGroup: (topic, group) => once(groupKey(topic, group), () => ensureSubscription(clients, settings, topic, group))
    }
    const prepare = resources.prepare

    const send = (topic: string, messages: ReadonlyArray<PubsubMessage>) => {
      const requests = batches(messages)
      return requests.length === 1
        ? publishBatch(clients, settings, topic, requests[0]!)
        : Effect.forEach(requests, (batch) => publishBatch(clients, settings, topic, batch), { discard: true })
    }

    const publish = (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) => {
      if (messages.length === 0) return Effect.void
      if (!validName(topic)) return Effect.fail(new Transport.PublishError({ topic, cause: new InvalidName({ kind: "topic", name: topic }) }))
      const encoded = messages.map(encode)
      return prepare(topic).pipe(
        Effect.zipRight(send(topic, encoded)),
        // The topic was deleted behind the transport's back: create it again, once.
        Effect.catchIf((error) => codeOf(error.cause) === Code.notFound, () => {
          resources.forget(topic)
          return Effect.zipRight(prepare(topic), send(topic, encoded))
        }),
        // No clock is read: the publish timeout is a timer of its own (`call`'s bound), on the wall clock whatever
        // `Clock` the caller's fiber carries.
        Effect.mapError((error) => new Transport.PublishError({ topic, cause: error.cause }))
      )
    }

    const subscribe = (topic: string, options?: Transport.SubscribeOptions) =>
      Stream.unwrapScoped(subscription(clients, settings, topic, options?.group ?? "default", resources, track))

    return { features, publish, subscribe }
  })

/** What settling a delivery of one subscription needs, shared by all of its deliveries. */
interface SettleContext {
  readonly ackNow: (ackId: string) => Effect.Effect<void, unknown>
  readonly queueAck: (ackId: string, messageId: string) => void
  readonly nack: (ackId: string, delayMillis: number) => Effect.Effect<void, unknown>
  readonly deadLetter: (ackId: string, copy: Transport.OutgoingMessage) => Effect.Effect<void, unknown>
}

// The settle-once guard, the dead-letter copy and the DeliveryError come from the driver base. One object per
// delivery, its operations on the prototype and built only when called: most deliveries are only acked.
class ConfirmedSettlement implements Driver.Settlement {
  constructor(readonly context: SettleContext, readonly ackId: string, readonly messageId: string) {}
  get ack(): Effect.Effect<void, unknown> {
    return this.context.ackNow(this.ackId)
  }
  nack(delayMillis: number): Effect.Effect<void, unknown> {
    return this.context.nack(this.ackId, delayMillis)
  }
  deadLetter(copy: Transport.OutgoingMessage): Effect.Effect<void, unknown> {
    return this.context.deadLetter(this.ackId, copy)
  }
}

// Without `confirmAcks` an ack completes once queued: the driver base runs it as one synchronous step.
class QueuedSettlement extends ConfirmedSettlement {
  override get ack(): Effect.Effect<void, unknown> {
    return Effect.sync(() => this.ackQueued())
  }
  ackQueued(): void {
    this.context.queueAck(this.ackId, this.messageId)
  }
}

const unwrapped = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<void, unknown> =>
  Effect.mapError(Effect.asVoid(effect), (cause) => cause instanceof CallError ? cause.cause : cause)

/**
 * One subscription: its Pub/Sub subscription created if needed, then a pull loop. Deliveries may be settled
 * after the stream ended (the ack ids stay valid); unsettled ones return after the visibility timeout.
 */
export const subscription = (
  clients: Clients,
  settings: Settings,
  topic: string,
  group: string,
  resources: Resources,
  track: (sent: Promise<void>, messageIds: ReadonlyArray<string>) => void
): Effect.Effect<Stream.Stream<Delivery.Delivery, Transport.SubscribeError>, Transport.SubscribeError, Scope.Scope> =>
  Effect.gen(function*() {
    const fail = (cause: unknown) => new Transport.SubscribeError({ topic, cause: cause instanceof CallError ? cause.cause : cause })
    if (!validName(topic)) return yield* fail(new InvalidName({ kind: "topic", name: topic }))
    const id = subscriptionId(topic, group)
    if (!validName(id)) return yield* fail(new InvalidName({ kind: "subscription", name: id }))
    const path = subscriptionPath(settings.projectId, id)
    yield* Effect.mapError(resources.ensureGroup(topic, group), fail)

    const sendAcks = (ackIds: ReadonlyArray<string>) =>
      Promise.all(chunks(ackIds).map((ids) => clients.subscriber.acknowledge({ subscription: path, ackIds: ids }))).then(() => undefined)
    const ack = Driver.batcher<string>(sendAcks)
    const ackNow = (ackId: string) => Effect.tryPromise({ try: () => ack(ackId), catch: (cause) => new CallError({ cause }) })
    const context: SettleContext = {
      ackNow: (ackId) => unwrapped(ackNow(ackId)),
      // Acks that complete once queued: gathered per event-loop turn into one request, followed (and waited for
      // at close) per request from the first ack queued.
      queueAck: Driver.queuedBatcher<string>(sendAcks, track),
      nack: (ackId, delayMillis) => unwrapped(modifyAckDeadline(clients, path, [ackId], seconds(Duration.millis(delayMillis)))),
      // The copy goes to the `.dlq` topic first, then the original is acknowledged: a failure between the two
      // leaves a copy in both places (at least once), never in neither.
      deadLetter: (ackId, copy) => {
        const deadTopic = Driver.deadLetterTopic(topic)
        return unwrapped(resources.prepare(deadTopic).pipe(
          Effect.zipRight(publishBatch(clients, settings, deadTopic, [encode(copy)])),
          Effect.zipRight(ackNow(ackId))
        ))
      }
    }
    const Settlement = settings.confirmAcks ? ConfirmedSettlement : QueuedSettlement

    const toDelivery = (received: Received): Delivery.Delivery | undefined => {
      const ackId = received.ackId
      if (typeof ackId !== "string") return undefined
      const message = decode(topic, received)
      // Pub/Sub counts attempts on subscriptions with a dead-letter policy, which the transport always sets.
      return Driver.delivery(message, Math.max(1, received.deliveryAttempt ?? 1), new Settlement(context, ackId, message.id))
    }

    const shorten = settings.visibilitySeconds < 10
    const poll = Effect.gen(function*() {
      const received = yield* pull(clients, settings, path)
      if (received.length === 0) return Chunk.empty<Delivery.Delivery>()
      if (shorten) {
        // The subscription's deadline is at least 10 s; the visibility timeout asked for is shorter.
        const ids = received.flatMap((r) => typeof r.ackId === "string" ? [r.ackId] : [])
        yield* modifyAckDeadline(clients, path, ids, settings.visibilitySeconds)
      }
      const deliveries: Array<Delivery.Delivery> = []
      for (const r of received) {
        const delivery = toDelivery(r)
        if (delivery !== undefined) deliveries.push(delivery)
      }
      return Chunk.unsafeFromArray(deliveries)
    }).pipe(
      // Uninterruptible: messages the service hands to a pull that is cancelled would be held for the
      // subscription's whole deadline (at least 10 s) instead of the visibility timeout; a pull lasts at most
      // `pullTimeout`.
      Effect.uninterruptible,
      Effect.catchIf((error) => codeOf(error.cause) === Code.notFound, () =>
        // The subscription was deleted under us: create it again and go on.
        Effect.as(ensureSubscription(clients, settings, topic, group), Chunk.empty<Delivery.Delivery>())),
      // The schedule (on the wall clock) only once a pull failed: a poll that succeeds pays for neither.
      (pulling) =>
        Driver.retryTransient(pulling, {
          while: (error) => isTransient(error.cause),
          schedule: Schedule.exponential("100 millis").pipe(
            Schedule.union(Schedule.spaced("2 seconds")),
            Schedule.upTo(settings.reconnectTimeout)
          )
        }),
      Effect.mapError(fail)
    )

    return Stream.repeatEffectChunk(poll)
  })
