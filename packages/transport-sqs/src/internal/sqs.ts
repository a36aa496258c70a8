/**
 * The SQS driver's protocol parts, as top-level functions over `@aws-sdk/client-sqs`: queue names, message
 * encoding, queue creation, publish, receive and the settle calls. `make` wires them into a driver.
 */
import {
  ChangeMessageVisibilityCommand,
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  type Message,
  type MessageAttributeValue,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SQSClient,
  type SQSClientConfig
} from "@aws-sdk/client-sqs"
import { Delivery, Failure } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import { isUtf8 } from "node:buffer"
import { createHash } from "node:crypto"
import { Chunk, Data, Duration, Effect, Either, Runtime, Schedule, Scope, Stream } from "effect"

/** Settings with every default applied. */
export interface Settings {
  readonly endpoint: string | undefined
  readonly region: string
  readonly clientConfig: SQSClientConfig
  readonly queuePrefix: string
  readonly fifo: boolean
  /** Whole seconds, 0 to 43200. */
  readonly visibilitySeconds: number
  readonly waitSeconds: number
  readonly maxReceiveCount: number
  readonly connectTimeout: Duration.Duration
  readonly reconnectTimeout: Duration.Duration
  readonly socketTimeout: Duration.Duration
  readonly confirmAcks: boolean
}

/** The service could not be reached, or the settings are unusable, when the transport started. */
export class SqsConnectionError extends Data.TaggedError("SqsConnectionError")<{
  /** The endpoint as given (`default` for AWS's). */
  readonly endpoint: string
  readonly cause: unknown
}> {
  // The service may come back: a supervisor retrying the start is right to.
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "transient", category: "dependency" }
  }

  override get message(): string {
    const cause = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `cannot reach SQS at ${this.endpoint}: ${cause}`
  }
}

/** A topic whose queue name would be longer than SQS allows (80 characters). Permanent. */
export class InvalidName extends Data.TaggedError("InvalidName")<{
  readonly topic: string
  readonly queue: string
}> {
  // The same name fails the same way every time: nothing to retry.
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: "schema" }
  }

  override get message(): string {
    return `topic ${JSON.stringify(this.topic)} maps to the queue name ${JSON.stringify(this.queue)}, longer than SQS's 80 characters`
  }
}

/**
 * A subscription asked for a consumer group other than `default`: SQS queues have no fan-out, so that group
 * would silently compete with the others for the same messages. Permanent.
 */
export class GroupsUnsupported extends Data.TaggedError("GroupsUnsupported")<{
  readonly group: string
}> {
  // The same request fails the same way every time: nothing to retry.
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return { classification: "permanent", category: "schema" }
  }

  override get message(): string {
    return `SQS has no consumer groups (asked for ${JSON.stringify(this.group)}): every subscriber of a topic competes for its ` +
      `messages. Fan out with SNS to one topic per group, or subscribe without a group`
  }
}

/** Message attribute names the transport writes; other producers' attributes become headers. */
export const Attributes = {
  id: "bulwark-id",
  key: "bulwark-key",
  /** The headers, as one JSON object: SQS allows only 10 message attributes. */
  headers: "bulwark-headers",
  /**
   * `base64`: the body is the payload in base64, for a payload SQS cannot carry as text. Without it the body is
   * the payload as UTF-8 text (a text payload, or another producer's message).
   */
  encoding: "bulwark-encoding"
} as const

/**
 * The queue name of a topic: characters SQS does not allow in names (anything but letters, digits, `-`) are
 * written `_xx` (hex), `_` itself included, so two topics never share a queue; FIFO queues end in `.fifo`.
 */
export const queueName = (prefix: string, topic: string, fifo: boolean): string => {
  let name = prefix
  for (const char of topic) {
    if (/[A-Za-z0-9-]/.test(char)) name += char
    else for (const byte of Buffer.from(char, "utf8")) name += `_${byte.toString(16).padStart(2, "0")}`
  }
  return fifo ? `${name}.fifo` : name
}

const validQueueName = (name: string) => name.length > 0 && name.length <= 80

/** An entry of `SendMessageBatch`, without its batch id. */
export interface SqsEntry {
  readonly MessageBody: string
  readonly MessageAttributes: Record<string, MessageAttributeValue>
  readonly MessageGroupId?: string
  readonly MessageDeduplicationId?: string
}

const text = (value: string): MessageAttributeValue => ({ DataType: "String", StringValue: value })

// Whether an object has an own enumerable key, without the array `Object.keys` builds per message.
const hasOwnKeys = (record: object): boolean => {
  for (const name in record) if (Object.hasOwn(record, name)) return true
  return false
}

// SQS caps a deduplication or group id at 128 characters of its own alphabet; longer or other ids are hashed.
const sqsId = (id: string) => /^[A-Za-z0-9!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]{1,128}$/.test(id) ? id : createHash("sha256").update(id).digest("hex")

// What a body may not hold as text: SQS takes #x9, #xA, #xD, #x20-#xD7FF and #xE000-#xFFFD, and documents
// #x10000-#x10FFFF too, which emulators (fauxqs) refuse; those (surrogate pairs in a string) go in base64 as well.
const refusedInBody = /[\0-\x08\x0B\x0C\x0E-\x1F\uD800-\uDFFF\uFFFE\uFFFF]/

/**
 * Encodes a message: id, key and headers as message attributes; a payload that is UTF-8 text SQS accepts as the
 * body itself (decoded byte for byte by every version, and readable by other consumers), any other in base64
 * with the `bulwark-encoding` marker. On a FIFO queue the key is the message group (the ordering unit; a keyless
 * message is a group of its own) and the id the deduplication id.
 */
export const encode = (message: Transport.OutgoingMessage, fifo: boolean): SqsEntry => {
  const attributes: Record<string, MessageAttributeValue> = { [Attributes.id]: text(message.id) }
  if (message.key !== "") attributes[Attributes.key] = text(message.key)
  if (hasOwnKeys(message.headers)) attributes[Attributes.headers] = text(JSON.stringify(message.headers))
  const payload = Buffer.from(message.payload.buffer, message.payload.byteOffset, message.payload.byteLength)
  let body = payload.length > 0 && isUtf8(payload) ? payload.toString("utf8") : undefined
  if (body === undefined || refusedInBody.test(body)) {
    attributes[Attributes.encoding] = text("base64")
    // SQS refuses an empty body; "=" is what an empty payload's base64 is padded to, decoded back to no bytes.
    body = payload.length === 0 ? "=" : payload.toString("base64")
  }
  return fifo
    ? {
      MessageBody: body,
      MessageAttributes: attributes,
      MessageGroupId: sqsId(message.key === "" ? message.id : message.key),
      MessageDeduplicationId: sqsId(message.id)
    }
    : { MessageBody: body, MessageAttributes: attributes }
}

const headerOf = (name: string, value: string): Record<string, string> => ({ [name]: value })

const parseHeaders = (raw: string): Record<string, string> => {
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch {
    // Kept as it came, so nothing is lost.
    return headerOf(Attributes.headers, raw)
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return headerOf(Attributes.headers, raw)
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(parsed)) Driver.setHeader(headers, name, String(value))
  return headers
}

/**
 * Decodes what {@link encode} wrote, and what earlier versions wrote (every payload in base64 with the marker);
 * a message sent by another producer keeps its body as text bytes.
 */
export const decode = (topic: string, message: Message): Delivery.Message => {
  const attributes = message.MessageAttributes
  let id: string | undefined
  let key: string | undefined
  let base64 = false
  let rawHeaders: string | undefined
  // Another producer's string attributes, as name, value, ...: headers too.
  let foreign: Array<string> | undefined
  if (attributes !== undefined) {
    for (const name in attributes) {
      const value = attributes[name]!.StringValue
      if (name === Attributes.id) id = value
      else if (name === Attributes.key) key = value
      else if (name === Attributes.encoding) base64 = value === "base64"
      else if (name === Attributes.headers) rawHeaders = value
      else if (value !== undefined) (foreign ??= []).push(name, value)
    }
  }
  const headers = rawHeaders === undefined ? {} : parseHeaders(rawHeaders)
  if (foreign !== undefined) for (let i = 0; i < foreign.length; i += 2) Driver.setHeader(headers, foreign[i]!, foreign[i + 1]!)
  const body = message.Body ?? ""
  return {
    id: id ?? message.MessageId ?? "",
    topic,
    key: key ?? "",
    payload: base64 ? Buffer.from(body === "=" ? "" : body, "base64") : Buffer.from(body, "utf8"),
    headers
  }
}

/** A call to the service failed; `cause` is the client's error. */
export class CallError extends Data.TaggedError("CallError")<{ readonly cause: unknown }> {}

const nameOf = (error: unknown): string | undefined => {
  const name = (error as { name?: unknown } | null)?.name
  return typeof name === "string" ? name : undefined
}

/** Failures worth retrying: the network or the service, not the request. */
export const isTransient = (error: unknown): boolean => {
  const fault = (error as { $fault?: unknown } | null)?.$fault
  const status = (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode
  return fault === undefined || fault === "server" || status === undefined || status >= 500 || nameOf(error) === "ThrottlingException" ||
    nameOf(error) === "RequestThrottled"
}

const isMissingQueue = (error: unknown) => /(QueueDoesNotExist|NonExistentQueue)$/.test(nameOf(error) ?? "")

/**
 * Runs a client call; the signal is aborted when the effect is interrupted. Only the set-up calls hand it to the
 * client (see {@link connect}): any per-call option turns the client's handler cache off for that call and empties it.
 */
export const call = <A>(run: (signal: AbortSignal) => Promise<A>): Effect.Effect<A, CallError> =>
  Effect.tryPromise({ try: run, catch: (cause) => new CallError({ cause }) })

/** Opens the client, closed with the scope, and checks the service answers. */
export const connect = (settings: Settings): Effect.Effect<SQSClient, SqsConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    // As it may appear in logs and errors: a password in the URL is masked.
    const endpoint = settings.endpoint === undefined ? "default" : Driver.redactUrl(settings.endpoint)
    const client = yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          new SQSClient({
            region: settings.region,
            // The SDK's Node handler, given as its options: a stalled call fails after `socketTimeout`.
            requestHandler: { socketTimeout: Duration.toMillis(settings.socketTimeout), connectionTimeout: Duration.toMillis(settings.connectTimeout) },
            // The middleware stack is resolved once per command class instead of on every call, which was about a
            // seventh of the client's CPU per message in the benchmark. Safe here: nothing changes this client's
            // stack after it is built. It holds only for calls made without per-call options, so the calls made per
            // message pass none: an interrupted publish or nack still returns at once, and its request ends when the
            // service answers or after `socketTimeout` (what it did was unknown either way: it may have reached the
            // service already).
            cacheMiddleware: true,
            ...settings.clientConfig,
            ...(settings.endpoint === undefined ? {} : { endpoint: settings.endpoint })
          }),
        catch: (cause) => new SqsConnectionError({ endpoint, cause })
      }),
      (client) => Effect.sync(() => client.destroy())
    )
    // Any answer proves the service is there (a missing queue is an answer).
    yield* call((abortSignal) =>
      client.send(new GetQueueUrlCommand({ QueueName: `${settings.queuePrefix}bulwark-connection-check` }), { abortSignal })
    ).pipe(
      Effect.catchIf((error) => isMissingQueue(error.cause), () => Effect.void),
      Effect.timeoutFail({
        duration: settings.connectTimeout,
        onTimeout: () => new CallError({ cause: `no answer within ${Duration.format(settings.connectTimeout)}` })
      }),
      Effect.mapError((error) => new SqsConnectionError({ endpoint, cause: error.cause }))
    )
    return client
  })

/** A queue's URL, after creating it if needed (with a redrive policy to `deadLetterArn` when given). */
export const ensureQueue = (client: SQSClient, settings: Settings, name: string, deadLetterArn: string | undefined) =>
  Effect.gen(function*() {
    const attributes: Record<string, string> = { VisibilityTimeout: String(settings.visibilitySeconds) }
    if (settings.fifo) attributes["FifoQueue"] = "true"
    if (deadLetterArn !== undefined) {
      attributes["RedrivePolicy"] = JSON.stringify({ deadLetterTargetArn: deadLetterArn, maxReceiveCount: String(settings.maxReceiveCount) })
    }
    return yield* call((abortSignal) => client.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }), { abortSignal })).pipe(
      Effect.map((out) => out.QueueUrl!),
      // Created earlier with other attributes (by an older version, or by hand): used as it is.
      Effect.catchIf(
        // The client names it after the query protocol's code: `AWS.SimpleQueueService.QueueNameExists`.
        (error) => /(QueueNameExists|QueueAlreadyExists)$/.test(nameOf(error.cause) ?? ""),
        () => Effect.map(call((abortSignal) => client.send(new GetQueueUrlCommand({ QueueName: name }), { abortSignal })), (out) => out.QueueUrl!)
      )
    )
  })

/** The queue's ARN, for a redrive policy. */
export const queueArn = (client: SQSClient, url: string) =>
  Effect.map(
    call((abortSignal) => client.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["QueueArn"] }), { abortSignal })),
    (out) => out.Attributes?.["QueueArn"] ?? ""
  )

// Each field named: one object shape for every entry, cheaper to build than a spread.
const batchEntry = (entry: SqsEntry, i: number) => ({
  Id: String(i),
  MessageBody: entry.MessageBody,
  MessageAttributes: entry.MessageAttributes,
  MessageGroupId: entry.MessageGroupId,
  MessageDeduplicationId: entry.MessageDeduplicationId
})

/**
 * One `SendMessageBatch` of up to 10 entries; rejects unless every one was accepted (with the first failed
 * entry, or what was missing), as with the client's own error when the call fails.
 */
const sendBatchCall = (client: SQSClient, url: string, entries: ReadonlyArray<SqsEntry>): Promise<void> =>
  client.send(new SendMessageBatchCommand({ QueueUrl: url, Entries: entries.map(batchEntry) })).then((out) =>
    (out.Failed?.length ?? 0) === 0 && (out.Successful?.length ?? 0) === entries.length
      ? undefined
      : Promise.reject(out.Failed?.[0] ?? `the service accepted ${out.Successful?.length ?? 0} of ${entries.length} messages`)
  )

/**
 * Sends entries in `SendMessageBatch` calls within SQS's limits, one after another in order, as one effect: one
 * step per publish rather than per call. Fails at the first call not wholly accepted; the calls after it are not
 * made. Interrupted, it returns at once and makes no further call; the call in flight is left to end.
 */
export const sendAll = (client: SQSClient, url: string, entries: ReadonlyArray<SqsEntry>): Effect.Effect<void, CallError> =>
  call(async (abortSignal) => {
    for (const batch of batches(entries)) {
      // Interrupted between two calls: the next one is not made.
      abortSignal.throwIfAborted()
      await sendBatchCall(client, url, batch)
    }
  })

// SendMessageBatch: 10 entries and 256 KiB at most (the service now allows 1 MiB; the smaller bound suits both).
const maxBatchEntries = 10
const maxBatchBytes = 250 * 1024

const entrySize = (entry: SqsEntry) => {
  let size = Buffer.byteLength(entry.MessageBody)
  for (const [name, value] of Object.entries(entry.MessageAttributes)) {
    size += Buffer.byteLength(name) + Buffer.byteLength(value.StringValue ?? "") + 6
  }
  return size
}

/** Splits a publish into `SendMessageBatch` calls within SQS's limits, in order. */
export const batches = (entries: ReadonlyArray<SqsEntry>): Array<Array<SqsEntry>> =>
  Driver.chunked(entries, { maxItems: maxBatchEntries, maxBytes: maxBatchBytes, size: entrySize })

/**
 * One long poll of up to 10 messages, with their receive counts. Not aborted when interrupted (no abort signal
 * to make per call): the subscription runs it uninterruptibly, so messages it took are not left invisible.
 */
export const receive = (client: SQSClient, settings: Settings, url: string) =>
  Effect.tryPromise({
    try: () =>
      client.send(
        new ReceiveMessageCommand({
          QueueUrl: url,
          MaxNumberOfMessages: 10,
          WaitTimeSeconds: settings.waitSeconds,
          MessageAttributeNames: ["All"],
          MessageSystemAttributeNames: ["ApproximateReceiveCount"]
        })
      ).then((out) => out.Messages ?? []),
    catch: (cause) => new CallError({ cause })
  })

/** Deletes receipt handles, 10 per call; fails if any was not deleted. */
export const deleteBatch = (client: SQSClient, url: string, handles: ReadonlyArray<string>) => {
  const calls: Array<Promise<void>> = []
  for (let i = 0; i < handles.length; i += 10) {
    const part = handles.slice(i, i + 10)
    calls.push(
      client.send(new DeleteMessageBatchCommand({ QueueUrl: url, Entries: part.map((handle, j) => ({ Id: String(j), ReceiptHandle: handle })) }))
        .then((out) => {
          if ((out.Failed?.length ?? 0) > 0) throw out.Failed![0]
        })
    )
  }
  return Promise.all(calls).then(() => undefined)
}

/** Sets a delivery's visibility timeout (0: deliver again now). */
export const changeVisibility = (client: SQSClient, url: string, handle: string, seconds: number) =>
  call(() => client.send(new ChangeMessageVisibilityCommand({ QueueUrl: url, ReceiptHandle: handle, VisibilityTimeout: seconds })))


const seconds = (delay: Duration.DurationInput | undefined): number =>
  delay === undefined ? 0 : Math.min(43_200, Math.max(0, Math.ceil(Duration.toMillis(Duration.decode(delay)) / 1000)))

/** Creates the driver over an open client. */
export const make = (settings: Settings) =>
  Effect.gen(function*() {
    const client = yield* connect(settings)
    const runtime = yield* Effect.runtime<never>()

    const features: Transport.Features = {
      // FIFO queues deliver one message of a message group at a time, in order.
      orderedPerKey: settings.fifo,
      delayedNack: true,
      visibilityTimeout: Duration.seconds(settings.visibilitySeconds),
      deadLetterTopic: true,
      // One queue per topic: every subscriber competes for its messages.
      consumerGroups: false,
      persistent: true,
      // FIFO queues drop a message whose deduplication id (the message id) was sent in the last 5 minutes.
      ...(settings.fifo ? { dedupeWindow: Duration.minutes(5) } : {})
    }

    // Acks not yet answered. Without `confirmAcks` an ack completes once queued and one that fails means a
    // redelivery, logged; the transport waits for every queued ack before it closes its client.
    const track = yield* Driver.unansweredRequests("deletion")

    // Queue URLs this process has created or found, so a publish costs one call. A topic's queue is created
    // after its `.dlq` queue, whose ARN its redrive policy names. `answered` holds those already answered, for a
    // publish to use without waiting on the promise.
    const urls = new Map<string, Promise<Either.Either<string, CallError>>>()
    const answered = new Map<string, string>()
    const await_ = (topic: string, promise: Promise<Either.Either<string, CallError>>) =>
      Effect.flatMap(Effect.promise(() => promise), (result) => {
        if (Either.isLeft(result)) return Effect.zipRight(Effect.sync(() => urls.delete(topic)), Effect.fail(result.left))
        // Only while it is still the topic's current lookup (a refresh may have replaced it since).
        if (urls.get(topic) === promise) answered.set(topic, result.right)
        return Effect.succeed(result.right)
      })
    const urlOf = (topic: string, refresh = false): Effect.Effect<string, CallError | InvalidName> => {
      if (refresh) {
        urls.delete(topic)
        answered.delete(topic)
      }
      const known = urls.get(topic)
      if (known !== undefined) return await_(topic, known)
      const name = queueName(settings.queuePrefix, topic, settings.fifo)
      if (!validQueueName(name)) return Effect.fail(new InvalidName({ topic, queue: name }))
      const deadName = queueName(settings.queuePrefix, Delivery.deadLetterTopic(topic), settings.fifo)
      const work = validQueueName(deadName)
        ? Effect.flatMap(
          Effect.flatMap(ensureQueue(client, settings, deadName, undefined), (url) => queueArn(client, url)),
          (arn) => ensureQueue(client, settings, name, arn)
        )
        : ensureQueue(client, settings, name, undefined)
      // Shared by concurrent callers, so a topic's queues are created once.
      const promise = Runtime.runPromise(runtime)(Effect.either(work))
      urls.set(topic, promise)
      return await_(topic, promise)
    }

    const publishError = (topic: string, error: CallError | InvalidName) =>
      new Transport.PublishError({ topic, cause: error._tag === "CallError" ? error.cause : error })

    const publish = (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) => {
      if (messages.length === 0) return Effect.void
      const entries = messages.map((m) => encode(m, settings.fifo))
      const url = answered.get(topic)
      const sending = url !== undefined ? sendAll(client, url, entries) : Effect.flatMap(urlOf(topic), (url) => sendAll(client, url, entries))
      // One handler for both outcomes of a failure, so a publish that succeeds passes one step here.
      return Effect.catchAll(sending, (error) =>
        error._tag === "CallError" && isMissingQueue(error.cause)
          // The queue was deleted behind the transport's back: create it again, once.
          ? Effect.mapError(Effect.flatMap(urlOf(topic, true), (url) => sendAll(client, url, entries)), (error) => publishError(topic, error))
          : Effect.fail(publishError(topic, error))).pipe(Driver.inRealTime)
    }

    const subscribe = (topic: string, options?: Transport.SubscribeOptions) =>
      options?.group === undefined || options.group === "default"
        ? Stream.unwrapScoped(subscription(client, settings, topic, urlOf, track))
        : Stream.fail(new Transport.SubscribeError({ topic, cause: new GroupsUnsupported({ group: options.group }) }))

    return { features, publish, subscribe }
  })

/** How one subscription settles a receipt handle. */
interface SettleContext {
  readonly ack: (handle: string, messageId: string) => Effect.Effect<void, unknown>
  /** Queues an unconfirmed ack (without `confirmAcks`). */
  readonly queueAck: ((handle: string, messageId: string) => void) | undefined
  readonly nack: (handle: string, delayMillis: number) => Effect.Effect<void, unknown>
  readonly deadLetter: (handle: string, copy: Transport.OutgoingMessage) => Effect.Effect<void, unknown>
}

// The settle-once guard, the dead-letter copy and the DeliveryError come from the driver base. One object per
// delivery, its operations on the prototype and built only when called: most deliveries are only acked.
class Settlement implements Driver.Settlement {
  constructor(readonly context: SettleContext, readonly handle: string, readonly messageId: string) {}
  get ack(): Effect.Effect<void, unknown> {
    return this.context.ack(this.handle, this.messageId)
  }
  nack(delayMillis: number): Effect.Effect<void, unknown> {
    return this.context.nack(this.handle, delayMillis)
  }
  deadLetter(copy: Transport.OutgoingMessage): Effect.Effect<void, unknown> {
    return this.context.deadLetter(this.handle, copy)
  }
  // Without `confirmAcks` an ack completes once queued: the driver base then runs it as one synchronous step
  // instead of an effect and its error mapping.
  get ackQueued(): (() => void) | undefined {
    return this.context.queueAck === undefined ? undefined : queueThisAck
  }
}

// Called by the driver base as a method of the settlement: one function for every delivery, no closure each.
function queueThisAck(this: Settlement): void {
  this.context.queueAck!(this.handle, this.messageId)
}

// The client's own error is what a DeliveryError carries, not the call wrapper.
const unwrapped = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<void, unknown> =>
  Effect.mapError(Effect.asVoid(effect), (cause) => cause instanceof CallError ? cause.cause : cause)

/**
 * One subscription: a long-poll receive loop on the topic's queue. Deliveries may be settled after the stream
 * ended (receipt handles stay valid until the message is received again).
 */
export const subscription = (
  client: SQSClient,
  settings: Settings,
  topic: string,
  urlOf: (topic: string, refresh?: boolean) => Effect.Effect<string, CallError | InvalidName>,
  track: (sent: Promise<void>, messageIds: ReadonlyArray<string>) => void
): Effect.Effect<Stream.Stream<Delivery.Delivery, Transport.SubscribeError>, Transport.SubscribeError, Scope.Scope> =>
  Effect.gen(function*() {
    const fail = (cause: unknown) => new Transport.SubscribeError({ topic, cause: cause instanceof CallError ? cause.cause : cause })
    let url = yield* Effect.mapError(urlOf(topic), fail)

    const remove = Driver.batcher<string>((handles) => deleteBatch(client, url, handles))
    const removeNow = (handle: string) => Effect.tryPromise({ try: () => remove(handle), catch: (cause) => new CallError({ cause }) })
    // Unconfirmed acks: gathered per turn of the event loop into delete calls, followed (and waited for at close)
    // per call from the first ack queued.
    const queueAck = Driver.queuedBatcher<string>((handles) => deleteBatch(client, url, handles), track)
    const settle: SettleContext = {
      ack: settings.confirmAcks ? (handle) => unwrapped(removeNow(handle)) : (handle, messageId) => Effect.sync(() => queueAck(handle, messageId)),
      queueAck: settings.confirmAcks ? undefined : queueAck,
      nack: (handle, delayMillis) => unwrapped(changeVisibility(client, url, handle, seconds(Duration.millis(delayMillis)))),
      // The copy goes to the `.dlq` queue first, then the original is deleted: a failure between the two leaves a
      // copy in both places (at least once), never in neither.
      deadLetter: (handle, copy) =>
        unwrapped(urlOf(Driver.deadLetterTopic(topic)).pipe(
          Effect.flatMap((deadUrl) => sendAll(client, deadUrl, [encode(copy, settings.fifo)])),
          Effect.zipRight(removeNow(handle))
        ))
    }

    const toDelivery = (received: Message): Delivery.Delivery | undefined => {
      const handle = received.ReceiptHandle
      if (handle === undefined) return undefined
      const message = decode(topic, received)
      const attempt = Math.max(1, Number(received.Attributes?.ApproximateReceiveCount ?? "1") || 1)
      return Driver.delivery(message, attempt, new Settlement(settle, handle, message.id))
    }

    const toDeliveries = (received: ReadonlyArray<Message>): Chunk.Chunk<Delivery.Delivery> => {
      const deliveries: Array<Delivery.Delivery> = []
      for (const r of received) {
        const delivery = toDelivery(r)
        if (delivery !== undefined) deliveries.push(delivery)
      }
      return Chunk.unsafeFromArray(deliveries)
    }

    // `url` read when each receive starts: a refresh below replaces it.
    const poll = Effect.suspend(() => Effect.map(receive(client, settings, url), toDeliveries)).pipe(
      // Uninterruptible: messages a receive that is aborted already took would stay invisible for the whole
      // visibility timeout; a receive lasts at most `waitSeconds`.
      Effect.uninterruptible,
      Effect.catchIf((error) => isMissingQueue(error.cause), () =>
        // The queue was deleted under us: create it again and go on.
        Effect.map(urlOf(topic, true), (fresh) => {
          url = fresh
          return Chunk.empty<Delivery.Delivery>()
        })),
      // The schedule (on the wall clock) only once a receive failed: a poll that succeeds pays for neither.
      (receiving) =>
        Driver.retryTransient(receiving, {
          while: (error) => error._tag === "CallError" && isTransient(error.cause),
          schedule: Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("2 seconds")), Schedule.upTo(settings.reconnectTimeout))
        }),
      Effect.mapError(fail)
    )

    return Stream.repeatEffectChunk(poll)
  })
