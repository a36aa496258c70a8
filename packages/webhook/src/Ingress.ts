/**
 * Fast-ack webhook ingress: one `@effect/platform` HTTP route per source that reads the raw body (with a
 * size limit), verifies it, decodes it with the route's Schema, dedupes on the webhook id, persists it as
 * a CloudEvents envelope through the `Transport.Publisher` port and only then answers 202. Business logic
 * never runs in the request: consumers read the topic.
 *
 * Answers (JSON bodies `{ "error": "<tag>", "message": "…" }` on refusal):
 * - 202 accepted and persisted; 200 a duplicate (acknowledged, not persisted again);
 * - 401 missing or bad signature (any {@link WebhookError.VerificationError});
 * - 400 a payload that is not JSON, nests deeper than `maxDepth`, or the schema rejects (the message is
 *   bounded); 413 a body over the limit; 408 a body that did not arrive within `bodyTimeout` (413 and 408
 *   close the connection);
 * - 409 the same id is being persisted by a concurrent request; 503 persisting failed, the replay guard's
 *   store could not be consulted (or an unexpected defect) — none of these acknowledged, so the sender retries.
 * node:http itself answers 400 (unparseable request), 408 (headers or request over the server's timeouts)
 * and 431 (headers over `maxHeaderSize`); see the webhook docs for the whole set.
 */
import { AuditLog, Envelope, Observe, SchemaUse, Telemetry, TraceContext } from "@bulwark/core"
import { Transport } from "@bulwark/transport"
import { type HttpApp, HttpIncomingMessage, HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer, NodeHttpServerRequest } from "@effect/platform-node"
import { EventEmitter } from "node:events"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { Cause, Clock, Context, DateTime, Duration, Effect, Either, Exit, FiberRefs, Metric, MetricLabel, Option, ParseResult, Runtime, Schema, type Tracer } from "effect"
import { createHash } from "node:crypto"
import { ReplayGuard } from "./ReplayGuard.js"
import { announce as announceVerified, type Request, type Verified, type Verifier } from "./Verifier.js"
import {
  BodyTimeout,
  InFlight,
  isVerificationError,
  MalformedPayload,
  PayloadTooLarge,
  PersistFailed,
  ReplayCheckFailed,
  type VerificationError
} from "./WebhookError.js"

/** How one source's webhooks are received. */
export interface Options<A, I> {
  /** Verifies the source's signatures. */
  readonly verifier: Verifier
  /** The payload schema, applied to the JSON body. */
  readonly schema: Schema.Schema<A, I>
  /** The topic accepted events are published to. */
  readonly topic: string
  /** The envelope's CloudEvents type: fixed, or read from the payload. */
  readonly type: string | ((data: A) => string)
  /** The envelope's subject (the business / ordering key). */
  readonly subject: (data: A, verified: Verified) => string
  /**
   * The dedupe / envelope id. Default: the scheme's id (`webhook-id`, `X-GitHub-Delivery`), else the
   * SHA-256 of the body (Stripe signs no id header; pass `(data) => data.id` for its event id).
   */
  readonly id?: (data: A, verified: Verified, body: Uint8Array) => string
  /**
   * The envelope's CloudEvents `dataschema`: the contract id and version the payload follows (see
   * `@bulwark/contracts`), fixed or read from the payload. Default: none.
   */
  readonly dataschema?: string | ((data: A) => string)
  /** The largest accepted body in bytes. Default 1 MiB. */
  readonly maxBodySize?: number
  /**
   * How long the body may take to arrive once the headers are in; a slower body is answered 408 and its
   * connection closed. Default 10 s ({@link defaultBodyTimeout}).
   */
  readonly bodyTimeout?: Duration.DurationInput
  /** The deepest nesting of JSON arrays and objects accepted; deeper bodies get 400. Default {@link defaultMaxDepth}. */
  readonly maxDepth?: number
  /** How long a persisted id is remembered as a duplicate. Default 3 days (the span of a sender's retries). */
  readonly dedupeTtl?: Duration.DurationInput
  /** How long an in-progress claim blocks a concurrent duplicate. Default 30 s. */
  readonly claimLease?: Duration.DurationInput
}

/** The default body limit: 1 MiB. */
export const defaultMaxBodySize = 1024 * 1024

/** The default time a body may take to arrive: 10 s. */
export const defaultBodyTimeout: Duration.Duration = Duration.seconds(10)

/**
 * The default deepest JSON nesting: 128 levels, far beyond real webhook payloads, and shallow enough that
 * decoding, error rendering and re-encoding (all recursive) cannot exhaust the stack.
 */
export const defaultMaxDepth = 128

/** Everything ingress may refuse with. */
export type IngressError =
  | VerificationError
  | PayloadTooLarge
  | MalformedPayload
  | BodyTimeout
  | InFlight
  | PersistFailed
  | ReplayCheckFailed

/** An accepted request: the id and whether it was a duplicate. */
export interface Accepted {
  readonly id: string
  readonly duplicate: boolean
}

/** The HTTP status for an ingress error. */
export const statusOf = (error: IngressError): number => {
  if (isVerificationError(error)) return 401
  switch (error._tag) {
    case "PayloadTooLarge":
      return 413
    case "MalformedPayload":
      return 400
    case "BodyTimeout":
      return 408
    case "InFlight":
      return 409
    case "PersistFailed":
    case "ReplayCheckFailed":
      return 503
  }
}

/** The machine-readable body of a refusal. */
export const errorBody = (error: IngressError): { readonly error: string; readonly message: string } => ({
  error: error._tag,
  message: error.message
})

const utf8 = new TextDecoder("utf-8", { fatal: true })

/** The longest detail rendered into a 400: the sender needs the gist, not a megabyte of schema errors. */
const maxDetailLength = 1024

const bounded = (text: string): string =>
  text.length <= maxDetailLength ? text : `${text.slice(0, maxDetailLength)}… (${text.length - maxDetailLength} more characters)`

/**
 * Whether a JSON text nests arrays/objects deeper than `limit`. Scans bytes (multi-byte UTF-8 never holds
 * an ASCII byte, and brackets inside strings are skipped), so it costs one pass and no recursion.
 */
const nestsDeeperThan = (body: Uint8Array, limit: number): boolean => {
  let depth = 0
  for (let i = 0; i < body.length; i++) {
    const byte = body[i]!
    if (byte === 0x22) {
      // A string is skipped to its closing quote, found with `indexOf` rather than byte by byte: the quote that
      // follows an even run of backslashes (an odd run escapes it).
      let end = i
      for (;;) {
        end = body.indexOf(0x22, end + 1)
        if (end === -1) return false // unterminated: not JSON, and nothing after it nests
        let backslashes = 0
        while (body[end - 1 - backslashes] === 0x5c) backslashes++
        if (backslashes % 2 === 0) break
      }
      i = end
    } else if (byte === 0x5b || byte === 0x7b) {
      if (++depth > limit) return true
    } else if (byte === 0x5d || byte === 0x7d) depth--
  }
  return false
}

// A stack overflow while decoding or re-encoding a payload is a property of the payload (too deep for a
// recursive schema), not of the server: it is answered 400, never 503 (which the sender would retry forever).
const tooDeep = (defect: unknown) =>
  defect instanceof RangeError
    ? Option.some(Effect.fail(new MalformedPayload({ detail: `payload too deeply nested to process (${bounded(defect.message)})` })))
    : Option.none()

/** The schema's complaint, bounded in length; a complaint too deep to render still yields a 400. */
const describeDecodeError = (error: ParseResult.ParseError): string => {
  try {
    return bounded(ParseResult.TreeFormatter.formatErrorSync(error))
  } catch (failure) {
    // The formatter recurses into the offending value; only a stack overflow is expected here.
    const reason = failure instanceof Error ? failure.message : String(failure)
    return bounded(`the payload does not match the schema (the complaint could not be rendered: ${reason})`)
  }
}

const parseJson = (body: Uint8Array): { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly detail: string } => {
  try {
    return { ok: true, value: JSON.parse(utf8.decode(body)) }
  } catch (error) {
    return { ok: false, detail: error instanceof Error ? error.message : String(error) }
  }
}

/** Announces a refusal (`webhook` `rejected`) with its HTTP status and the error's tag. */
const announceRejected = (status: number, reason: string, webhookId?: string): Effect.Effect<void> =>
  Observe.emitWith("webhook", "rejected", () => ({ status, reason, webhookId }))

/** Announces how a request ended: `accepted` (persisted or a duplicate) or `rejected` (with the answer's status). */
const announceOutcome = (topic: string, exit: Exit.Exit<Accepted, IngressError>): Effect.Effect<void> => {
  if (Exit.isSuccess(exit)) {
    const { id, duplicate } = exit.value
    return Effect.zipRight(
      Observe.emitWith("webhook", "accepted", () => ({ webhookId: id, topic, duplicate })),
      AuditLog.record(() => ({
        eventId: id,
        stage: "received",
        component: "webhook",
        topic,
        outcome: duplicate ? "duplicate" : "accepted",
        detail: { verification: "valid", status: duplicate ? 200 : 202 }
      }))
    )
  }
  const failure = Cause.failureOption(exit.cause)
  const status = answer(exit).status
  const reason = Option.isNone(failure) ? "Unavailable" : failure.value._tag
  const webhookId = Option.isSome(failure) && "id" in failure.value && typeof failure.value.id === "string"
    ? failure.value.id
    : undefined
  return Effect.zipRight(
    announceRejected(status, reason, webhookId),
    // A request refused before its id was read is still on record, under a placeholder id.
    AuditLog.record(() => ({
      eventId: webhookId ?? "(unidentified)",
      stage: "received",
      component: "webhook",
      topic,
      outcome: "rejected",
      detail: { verification: status === 401 ? "invalid" : status === 503 ? "unchecked" : "valid", status, reason }
    }))
  )
}

/**
 * A `traceparent` the sender put on the request, as a span link: the sender is outside the system and its
 * trace is not ours to extend, but a reader can follow the link.
 */
const senderLinks = (request: Request) => {
  const traceparent = (request.headers as Readonly<Record<string, unknown>>)[TraceContext.HeaderNames.traceparent]
  return typeof traceparent === "string"
    ? Option.toArray(TraceContext.linkTo({ [TraceContext.HeaderNames.traceparent]: traceparent }))
    : []
}

/** A request that passed the synchronous checks: what the persisting step needs. */
interface Prepared {
  readonly id: string
  readonly key: string
  readonly subject: string
  readonly type: string
  readonly payload: Uint8Array
}

// What a synchronous step could not finish without Effect (an async schema, an async verifier): the slow path.
const needsEffect = Symbol("needsEffect")

/**
 * Whether a parse failure comes, anywhere in its tree, from a part of the schema that cannot run synchronously
 * (an async transformation under a field): then the Effect path decodes again and decides.
 */
const isForbidden = (error: ParseResult.ParseError): boolean => containsForbidden(error.issue)

const containsForbidden = (issue: ParseResult.ParseIssue): boolean => {
  switch (issue._tag) {
    case "Forbidden":
      return true
    case "Pointer":
    case "Refinement":
    case "Transformation":
      return containsForbidden(issue.issue)
    case "Composite":
      return Array.isArray(issue.issues)
        ? issue.issues.some(containsForbidden)
        : containsForbidden(issue.issues as ParseResult.ParseIssue)
    default:
      return false
  }
}

/** What the immediate path reads from its environment besides the tracer: whether it audits, who observes. */
interface Facts {
  readonly env: Telemetry.Immediate
  readonly audited: boolean
  readonly observers: ReadonlyArray<Observe.Observer>
  readonly recorder: SchemaUse.Recorder | undefined
}

// The facts of the last environment seen: a node listener has one environment for all its requests, so they are
// read once, not per request (a route makes an environment per request and reads them each time, as before).
let lastFacts: Facts | undefined
const factsOf = (env: Telemetry.Immediate): Facts => {
  if (lastFacts?.env === env) return lastFacts
  lastFacts = {
    env,
    audited: Option.isSome(Context.getOption(env.context, AuditLog.AuditLog)),
    observers: FiberRefs.getOrDefault(env.fiberRefs, Observe.currentObservers),
    recorder: FiberRefs.getOrDefault(env.fiberRefs, SchemaUse.currentRecorder)
  }
  return lastFacts
}

// The request pipeline of one source: the effect path, the immediate path, and the choice between them.
const pipeline = <A, I>(options: Options<A, I>) => {
  const decodeEffect = Schema.decodeUnknown(options.schema, { errors: "all" })
  const decodeSync = Schema.decodeUnknownEither(options.schema, { errors: "all" })
  const encodeEffect = Envelope.encode(options.schema)
  const encodeDataSync = Schema.encodeEither(options.schema)
  const maxBodySize = options.maxBodySize ?? defaultMaxBodySize
  const maxDepth = options.maxDepth ?? defaultMaxDepth
  const dedupeTtl = Duration.decode(options.dedupeTtl ?? Duration.days(3))
  const claimLease = Duration.decode(options.claimLease ?? Duration.seconds(30))
  const source = `/webhooks/${options.verifier.source}`
  const typeOf = typeof options.type === "string" ? (() => options.type as string) : options.type
  const announce = (exit: Exit.Exit<Accepted, IngressError>) => announceOutcome(options.topic, exit)
  const spanName = `webhook.receive ${options.verifier.source}`
  const baseAttributes = {
    [Telemetry.Attr.webhookSource]: options.verifier.source,
    [Telemetry.Attr.webhookScheme]: options.verifier.scheme,
    [Telemetry.Attr.destination]: options.topic,
    [Telemetry.Attr.httpMethod]: "POST"
  }
  const verifyAttributes = {
    [Telemetry.Attr.webhookSource]: options.verifier.source,
    [Telemetry.Attr.webhookScheme]: options.verifier.scheme
  }
  const received = Metric.tagged(Metric.tagged(Telemetry.eventsReceived, "stage", "webhook"), "destination", options.topic)
  const duplicates = Metric.tagged(Telemetry.duplicatesSuppressed, "stage", "webhook")
  const receivedLabels = [MetricLabel.make("stage", "webhook"), MetricLabel.make("destination", options.topic)]
  const duplicatesLabels = [MetricLabel.make("stage", "webhook")]
  // The outcome on the server span and in the counters, once the event id is known.
  const accepted = (accepted: Accepted) =>
    Effect.zipRight(
      Telemetry.annotate({
        [Telemetry.Attr.messageId]: accepted.id,
        [Telemetry.Attr.conversationId]: accepted.id,
        [Telemetry.Attr.correlationId]: accepted.id,
        [Telemetry.Attr.webhookDuplicate]: accepted.duplicate
      }),
      Metric.increment(accepted.duplicate ? duplicates : received)
    )
  const verifySpan = Telemetry.withSafeSpan("webhook.verify", { kind: "internal", attributes: verifyAttributes })
  const verifyAt = options.verifier.verifyAt
  const verify = (request: Request, now: number): Effect.Effect<Verified, VerificationError | ReplayCheckFailed> =>
    verifySpan(
      verifyAt === undefined ? options.verifier.verify(request) : Effect.suspend(() => {
        const result = verifyAt(request, now)
        // The synchronous check bypasses `verify`, so the ingress announces its result itself.
        return Effect.zipRight(
          announceVerified(options.verifier.scheme, options.verifier.source, request, result),
          "_tag" in result ? Effect.fail(result) : Effect.succeed(result)
        )
      })
    )

  // The envelope time of the last millisecond seen: requests arriving within the same millisecond share the
  // (immutable) DateTime instead of building one each.
  let lastMillis = Number.NaN
  let lastTime: DateTime.Utc | undefined
  const timeAt = (now: number): DateTime.Utc => {
    if (now !== lastMillis || lastTime === undefined) {
      lastTime = DateTime.unsafeMake(now)
      lastMillis = now
    }
    return lastTime
  }

  // The envelope of a decoded payload (its bytes are encoded separately, synchronously when possible).
  const envelopeOf = (data: A, verified: Verified, body: Uint8Array, now: number): Envelope.Envelope<A> => {
    const id = options.id?.(data, verified, body) ?? verified.id ?? createHash("sha256").update(body).digest("hex")
    return {
      id,
      type: typeOf(data),
      source,
      subject: options.subject(data, verified),
      time: timeAt(now),
      data,
      headers: {},
      attempt: 0,
      ...(options.dataschema === undefined
        ? {}
        : { dataschema: typeof options.dataschema === "string" ? options.dataschema : options.dataschema(data) })
    }
  }
  const preparedOf = (envelope: Envelope.Envelope<A>, payload: Uint8Array): Prepared => ({
    id: envelope.id,
    key: `${options.verifier.source}:${envelope.id}`,
    subject: envelope.subject,
    type: envelope.type,
    payload
  })

  /**
   * Parse, decode and encode without Effect: the prepared request, a refusal, or `needsEffect` when the schema
   * cannot run synchronously. A stack overflow (a payload too deep for a recursive schema) is the payload's
   * fault: a 400, never a 503 that the sender would retry forever.
   */
  const prepareSync = (verified: Verified, body: Uint8Array, now: number): Prepared | MalformedPayload | typeof needsEffect => {
    if (nestsDeeperThan(body, maxDepth)) {
      return new MalformedPayload({ detail: `body nests arrays/objects deeper than ${maxDepth} levels` })
    }
    const json = parseJson(body)
    if (!json.ok) return new MalformedPayload({ detail: bounded(`body is not JSON: ${json.detail}`) })
    try {
      const decoded = decodeSync(json.value)
      if (Either.isLeft(decoded)) {
        return isForbidden(decoded.left) ? needsEffect : new MalformedPayload({ detail: describeDecodeError(decoded.left) })
      }
      const envelope = envelopeOf(decoded.right, verified, body, now)
      const encoded = encodeDataSync(envelope.data)
      if (Either.isLeft(encoded)) {
        return isForbidden(encoded.left)
          ? needsEffect
          : new MalformedPayload({ detail: bounded(`cannot encode envelope ${envelope.id}: ${describeDecodeError(encoded.left)}`) })
      }
      return preparedOf(envelope, Envelope.encodeEncoded(envelope, encoded.right))
    } catch (defect) {
      if (defect instanceof RangeError) {
        return new MalformedPayload({ detail: `payload too deeply nested to process (${bounded(defect.message)})` })
      }
      // Anything else thrown is a bug of the user's callbacks (id, type, subject): the Effect path turns it into
      // a defect, as it always has, so the sender gets 503 and retries.
      return needsEffect
    }
  }

  // The same steps as effects, for schemas with async parts (and user callbacks that throw: they become defects).
  const prepareEffect = (verified: Verified, body: Uint8Array, now: number): Effect.Effect<Prepared, MalformedPayload> =>
    Effect.gen(function*() {
      if (nestsDeeperThan(body, maxDepth)) {
        return yield* new MalformedPayload({ detail: `body nests arrays/objects deeper than ${maxDepth} levels` })
      }
      const json = parseJson(body)
      if (!json.ok) return yield* new MalformedPayload({ detail: bounded(`body is not JSON: ${json.detail}`) })
      // Suspended: a synchronous schema decodes (and may overflow) while the Effect is built, not run.
      const data = yield* Effect.suspend(() => decodeEffect(json.value)).pipe(
        Effect.mapError((error) => new MalformedPayload({ detail: describeDecodeError(error) })),
        Effect.catchSomeDefect(tooDeep)
      )
      const envelope = envelopeOf(data, verified, body, now)
      const payload = yield* Effect.suspend(() => encodeEffect(envelope)).pipe(
        Effect.mapError((error) => new MalformedPayload({ detail: bounded(error.message) })),
        Effect.catchSomeDefect(tooDeep)
      )
      return preparedOf(envelope, payload)
    })

  const prepare = (verified: Verified, body: Uint8Array, now: number): Effect.Effect<Prepared, MalformedPayload> => {
    const result = prepareSync(verified, body, now)
    return result === needsEffect
      ? prepareEffect(verified, body, now)
      : result instanceof MalformedPayload
      ? Effect.fail(result)
      : Effect.succeed(result)
  }

  // Persist → commit, releasing the claim on failure: what follows a successful claim.
  const store = (prepared: Prepared, guard: ReplayGuard["Type"]): Effect.Effect<Accepted, PersistFailed, Transport.Publisher> => {
    const { id, key } = prepared
    const publish = Effect.flatMap(Transport.Publisher, (publisher) =>
      SchemaUse.reported(
        publisher.publish(options.topic, [{ id, key: prepared.subject, payload: prepared.payload, headers: {} }]),
        () => usesOf(prepared)
      ))
    // Remembered only once persisted: a failed persist must leave the retry free to succeed.
    const remember = guard.commit(key, dedupeTtl).pipe(
      // The event is persisted, so it is acknowledged: answering 503 would make the sender send it again
      // for sure, where an unremembered id is only accepted again if it is redelivered after the lease.
      Effect.catchAll((error) =>
        Effect.logWarning("webhook accepted but its id could not be remembered; a redelivery may be accepted again").pipe(
          Effect.annotateLogs({ id, cause: error.message })
        ))
    )
    return publish.pipe(
      Effect.catchAllCause((cause): Effect.Effect<never, PersistFailed> =>
        Effect.fail(new PersistFailed({
          id,
          detail: Option.match(Cause.failureOption(cause), { onSome: (error) => error.message, onNone: () => Cause.pretty(cause) })
        }))),
      Effect.onError(() =>
        guard.release(key).pipe(
          Effect.catchAll((error) =>
            Effect.logWarning("webhook claim could not be released; the id is free again when its lease ends").pipe(
              Effect.annotateLogs({ id, cause: error.message })
            ))
        )),
      Effect.zipRight(remember),
      Effect.uninterruptible,
      Effect.as<Accepted>({ id, duplicate: false })
    )
  }
  const usesOf = (prepared: Prepared): ReadonlyArray<SchemaUse.SchemaUse> => [
    { role: "produce", topic: options.topic, schema: options.schema, type: prepared.type, source }
  ]

  // Claim → persist → commit (releasing on failure): the only steps that need the services.
  const persist = (prepared: Prepared, guard: ReplayGuard["Type"]): Effect.Effect<Accepted, IngressError, Transport.Publisher> =>
    Effect.flatMap(
      // Without the guard there is no knowing whether this is a replay: not acknowledged, the sender retries.
      Effect.mapError(guard.claim(prepared.key, claimLease, dedupeTtl), (error) => new ReplayCheckFailed({ detail: bounded(error.message) })),
      (claim): Effect.Effect<Accepted, IngressError, Transport.Publisher> =>
        claim === "seen"
          ? Effect.succeed({ id: prepared.id, duplicate: true })
          : claim === "in-flight"
          ? Effect.fail(new InFlight({ id: prepared.id }))
          : store(prepared, guard)
    )

  const serverSpanOptions = (request: Request) => ({
    kind: "server" as const,
    links: senderLinks(request),
    attributes: { ...baseAttributes, [Telemetry.Attr.httpBodySize]: request.body.length },
    captureStackTrace: false
  })
  const verifySpanOptions = { kind: "internal" as const, attributes: verifyAttributes, captureStackTrace: false }
  const immediateServerOptions = { kind: "server" as const, links: [], attributes: baseAttributes, captureStackTrace: false }

  const messageOf = (prepared: Prepared) => ({ id: prepared.id, key: prepared.subject, payload: prepared.payload, headers: {} })

  // Published at once: the schema use recorded (when a recording runs) and the id remembered.
  const committed = (facts: Facts, prepared: Prepared, sync: NonNullable<ReplayGuard["Type"]["immediate"]>, env: Telemetry.Immediate) => {
    const recorder = facts.recorder
    if (recorder !== undefined) for (const use of usesOf(prepared)) recorder(use)
    sync.commit(prepared.key, dedupeTtl, env.clock.unsafeCurrentTimeMillis())
  }

  // The accepted outcome with no tracer installed: its event and the counter.
  const finishUntraced = (env: Telemetry.Immediate, observers: ReadonlyArray<Observe.Observer>, outcome: Accepted): Accepted => {
    if (observers.length !== 0) {
      Observe.unsafeNotify(observers, "webhook", "accepted", { webhookId: outcome.id, topic: options.topic, duplicate: outcome.duplicate })
    }
    if (outcome.duplicate) Telemetry.unsafeUpdate(env, Telemetry.duplicatesSuppressed, duplicatesLabels, 1)
    else Telemetry.unsafeUpdate(env, Telemetry.eventsReceived, receivedLabels, 1)
    return outcome
  }

  // The accepted outcome of the immediate path: its event, the server span's outcome attributes, the counter.
  const finishImmediate = (
    env: Telemetry.Immediate,
    server: Tracer.Span,
    observers: ReadonlyArray<Observe.Observer>,
    outcome: Accepted
  ): Accepted => {
    if (observers.length !== 0) {
      Observe.unsafeNotify(observers, "webhook", "accepted", { webhookId: outcome.id, topic: options.topic, duplicate: outcome.duplicate })
    }
    server.attribute(Telemetry.Attr.messageId, outcome.id)
    server.attribute(Telemetry.Attr.conversationId, outcome.id)
    server.attribute(Telemetry.Attr.correlationId, outcome.id)
    server.attribute(Telemetry.Attr.webhookDuplicate, outcome.duplicate)
    if (outcome.duplicate) Telemetry.unsafeUpdate(env, Telemetry.duplicatesSuppressed, duplicatesLabels, 1)
    else Telemetry.unsafeUpdate(env, Telemetry.eventsReceived, receivedLabels, 1)
    Telemetry.unsafeEndSpan(env, server, outcome)
    return outcome
  }

  /**
   * The whole request without a fiber, when every step can finish at once: a verifier with fixed keys, a
   * synchronous schema, a replay guard and a publisher that answer immediately (the memory drivers), and no
   * audit log to write to. It makes the same spans (receive, verify, send), events and metric updates as the
   * effect path, in the same order. Answers the outcome; an effect that finishes the request inside its span
   * when the publisher has no room now; or `undefined`, having done nothing, when the effect path must run
   * (every refusal takes it, so refusals are answered by one code path).
   */
  const immediate = (
    request: Request,
    env: Telemetry.Immediate,
    guard: ReplayGuard["Type"],
    publisher: Transport.Publisher["Type"]
  ): Accepted | Effect.Effect<Accepted, IngressError, Transport.Publisher> | undefined => {
    const sync = guard.immediate
    if (verifyAt === undefined || sync === undefined || publisher.publishNow === undefined) return undefined
    const body = request.body
    const facts = factsOf(env)
    if (body.length > maxBodySize || facts.audited) return undefined
    const start = Telemetry.immediateTime(env)
    const now = env.clock.unsafeCurrentTimeMillis()
    const verified = verifyAt(request, now)
    if ("_tag" in verified) return undefined
    const verifyEnd = Telemetry.immediateTime(env)
    const prepared = prepareSync(verified, body, now)
    if (prepared === needsEffect || prepared instanceof MalformedPayload) return undefined
    const claim = sync.claim(prepared.key, claimLease, env.clock.unsafeCurrentTimeMillis())
    if (claim === "in-flight") return undefined
    // From here the request is answered on this path.
    const observers = facts.observers
    if (observers.length !== 0) {
      Observe.unsafeNotify(observers, "webhook", "verified", {
        scheme: options.verifier.scheme,
        source: options.verifier.source,
        ok: true,
        webhookId: verified.id
      })
    }
    // With no tracer installed the receive and verify spans would be read by nothing (the send span, which
    // stamps the message's trace context, is parented on the environment's span instead): they are not made.
    if (Telemetry.spansUnseen(env)) {
      if (claim === "seen") return finishUntraced(env, observers, { id: prepared.id, duplicate: true })
      if (publisher.publishNow(options.topic, [messageOf(prepared)], env)) {
        committed(facts, prepared, sync, env)
        return finishUntraced(env, observers, { id: prepared.id, duplicate: false })
      }
      return store(prepared, guard).pipe(Effect.onExit(announce), Effect.tap(accepted))
    }
    // The server span starts with the fixed attributes; the per-request ones are set on it, so no options
    // object is built per request.
    const links = senderLinks(request)
    const server = Telemetry.unsafeStartSpan(env, spanName, links.length === 0 ? immediateServerOptions : { ...immediateServerOptions, links }, start)
    server.attribute(Telemetry.Attr.httpBodySize, body.length)
    const verifying = Telemetry.unsafeStartSpan(env, "webhook.verify", verifySpanOptions, start, server)
    verifying.end(verifyEnd, Exit.succeed(verified))
    if (claim === "seen") return finishImmediate(env, server, observers, { id: prepared.id, duplicate: true })
    if (publisher.publishNow(options.topic, [messageOf(prepared)], { ...env, parent: server })) {
      committed(facts, prepared, sync, env)
      return finishImmediate(env, server, observers, { id: prepared.id, duplicate: false })
    }
    // No room now: the rest waits for it, as effects, inside the receive span.
    return store(prepared, guard).pipe(
      Effect.onExit(announce),
      Effect.tap(accepted),
      Effect.withParentSpan(server),
      Effect.onExit((exit) => Effect.sync(() => Telemetry.unsafeEndSpanExit(env, server, exit)))
    )
  }

  // Every step as an effect: any verifier, schema, guard and publisher.
  const viaEffects = (request: Request): Effect.Effect<Accepted, IngressError, Transport.Publisher | ReplayGuard> => {
    const body = request.body
    const work: Effect.Effect<Accepted, IngressError, Transport.Publisher | ReplayGuard> = body.length > maxBodySize
      ? Effect.fail(new PayloadTooLarge({ limit: maxBodySize, size: body.length }))
      : Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.flatMap(verify(request, now), (verified) =>
          Effect.flatMap(prepare(verified, body, now), (prepared) =>
            Effect.flatMap(ReplayGuard, (guard) => persist(prepared, guard)))))
    return work.pipe(
      Effect.onExit(announce),
      Effect.tap(accepted),
      Telemetry.withSafeSpan(spanName, serverSpanOptions(request))
    )
  }

  // The fiber's environment decides whether the request can finish at once.
  const run = (request: Request): Effect.Effect<Accepted, IngressError, Transport.Publisher | ReplayGuard> =>
    Effect.withFiberRuntime((fiber) => {
      const context = fiber.currentContext
      const env = Telemetry.immediate(context, fiber.getFiberRefs())
      const outcome = env === undefined
        ? undefined
        : immediate(request, env, Context.unsafeGet(context, ReplayGuard), Context.unsafeGet(context, Transport.Publisher))
      return outcome === undefined ? viaEffects(request) : Effect.isEffect(outcome) ? outcome : Effect.succeed(outcome)
    })

  return { run, immediate, viaEffects }
}

/**
 * The route's work without HTTP: verify → decode → dedupe → persist. The ingress route is a thin adapter
 * over it; property tests drive it directly.
 *
 * The hot path is synchronous: signature check (when the verifier's keys are fixed), JSON parse, schema decode
 * and envelope encode run as plain functions, and with the memory replay guard and transport the claim,
 * publish and commit too, so such a request runs no chain of effects at all. Schemas, verifiers, guards or
 * publishers that cannot answer at once take the same steps as effects, with the same answers, spans and events.
 */
export const process = <A, I>(options: Options<A, I>) => pipeline(options).run

/** An HTTP answer: status, extra headers and the JSON body. */
export interface Answer {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: unknown
}

/** The answer for an outcome (shared by the @effect/platform route and the node listener). */
export const answer = (outcome: Exit.Exit<Accepted, IngressError>): Answer => {
  if (Exit.isSuccess(outcome)) {
    const { id, duplicate } = outcome.value
    return { status: duplicate ? 200 : 202, headers: {}, body: { status: duplicate ? "duplicate" : "accepted", id } }
  }
  const failure = Cause.failureOption(outcome.cause)
  if (Option.isNone(failure)) {
    // Not a refusal we know (a defect or an interruption): nothing was acknowledged, so the sender retries.
    return { status: 503, headers: { "retry-after": "5" }, body: { error: "Unavailable", message: "the request could not be processed" } }
  }
  const error = failure.value
  return {
    status: statusOf(error),
    headers: error._tag === "PersistFailed" || error._tag === "ReplayCheckFailed"
      ? { "retry-after": "5" }
      // The rest of the body is not read: closing is the only way to leave the connection in a known state.
      : error._tag === "PayloadTooLarge" || error._tag === "BodyTimeout"
      ? { connection: "close" }
      : {},
    body: errorBody(error)
  }
}

/** Turns an outcome into the HTTP answer. */
export const respond = <R>(outcome: Effect.Effect<Accepted, IngressError, R>): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
  Effect.map(Effect.exit(outcome), (exit) => {
    const a = answer(exit)
    return responseOf(a)
  })

/** What reading a node request body ends with. */
type BodyResult = Uint8Array | PayloadTooLarge | MalformedPayload | BodyTimeout

/**
 * A node request body being read, with a limit and a deadline. The stream's listeners and the timer's callback
 * are shared functions that find it on the stream (`this` of a listener is the emitter), so a request allocates
 * this one record and no closures.
 */
interface BodyRead<C> {
  readonly incoming: IncomingMessage
  readonly maxBodySize: number
  readonly timeoutMillis: number
  /** Called once, with the body or the refusal. */
  readonly done: (result: BodyResult, context: C, incoming: IncomingMessage) => void
  readonly context: C
  /** The first chunk, kept as is: a small body arrives in one, and is then used without a copy. */
  first: Buffer | undefined
  rest: Array<Buffer> | undefined
  size: number
  /** Its own timer, for a timeout the shared deadlines cannot take (see {@link watchDeadline}). */
  timer: ReturnType<typeof setTimeout> | undefined
  /** Whether it is waiting in its timeout's shared {@link Deadlines}. */
  watched: boolean
  /** When it times out, on `performance.now()`'s clock. */
  deadline: number
}

/**
 * The body reads of one timeout still to finish, in the order they started (so in deadline order), and the one
 * timer that fires at the earliest deadline: a read costs a push and a flag instead of a timer set and cleared.
 */
interface Deadlines {
  queue: Array<BodyRead<unknown>>
  head: number
  timer: ReturnType<typeof setTimeout> | undefined
  /** The queue length at which finished reads behind an unfinished one are swept out. */
  sweepAt: number
}

const deadlinesByTimeout = new Map<number, Deadlines>()

// node runs a timer for at least 1 ms and at most 2^31 - 1 ms: a timeout outside that keeps the per-read timer
// (with node's handling of it) rather than a deadline the shared timer would compute differently.
const sharesDeadlines = (timeoutMillis: number): boolean => timeoutMillis >= 1 && timeoutMillis <= 2_147_483_647

const watchDeadline = (read: BodyRead<unknown>): void => {
  let deadlines = deadlinesByTimeout.get(read.timeoutMillis)
  if (deadlines === undefined) {
    deadlines = { queue: [], head: 0, timer: undefined, sweepAt: 1024 }
    deadlinesByTimeout.set(read.timeoutMillis, deadlines)
  }
  // Reads that finished are dropped from the front, so the queue holds about the reads in progress.
  const queue = deadlines.queue
  while (deadlines.head < queue.length && !queue[deadlines.head]!.watched) deadlines.head++
  if (deadlines.head === queue.length) {
    queue.length = 0
    deadlines.head = 0
  } else if (queue.length >= deadlines.sweepAt) {
    // A slow read at the front holds back those behind it: the finished ones are swept out, so the queue stays
    // about as long as the reads in progress (amortised: the next sweep waits for the queue to double).
    deadlines.queue = queue.slice(deadlines.head).filter((read) => read.watched)
    deadlines.head = 0
    deadlines.sweepAt = Math.max(1024, 2 * deadlines.queue.length)
  }
  read.watched = true
  read.deadline = performance.now() + read.timeoutMillis
  deadlines.queue.push(read)
  // Unreferenced: the connection being read keeps the process alive, the deadline need not.
  if (deadlines.timer === undefined) deadlines.timer = setTimeout(expireDeadlines, read.timeoutMillis, deadlines).unref()
}

// The shared timer: refuses the reads past their deadline, then waits for the next one still in progress.
const expireDeadlines = (deadlines: Deadlines): void => {
  deadlines.timer = undefined
  const now = performance.now()
  while (deadlines.head < deadlines.queue.length) {
    const read = deadlines.queue[deadlines.head]!
    if (read.watched && read.deadline > now) break
    deadlines.head++
    if (read.watched) onBodyTimeout(read)
  }
  if (deadlines.head === deadlines.queue.length) {
    deadlines.queue.length = 0
    deadlines.head = 0
    return
  }
  const next = deadlines.queue[deadlines.head]!.deadline
  deadlines.timer = setTimeout(expireDeadlines, Math.max(1, Math.ceil(next - now)), deadlines).unref()
}

const bodyRead: unique symbol = Symbol("bulwark.webhook.bodyRead")
type Reading = IncomingMessage & { [bodyRead]?: BodyRead<unknown> | undefined }

// Stops collecting: the listeners and the timer go, and the stream no longer points at the read.
const detachBody = (read: BodyRead<unknown>): void => {
  if (read.timer !== undefined) clearTimeout(read.timer)
  read.timer = undefined
  read.watched = false
  const incoming = read.incoming as Reading
  incoming[bodyRead] = undefined
  incoming.off("data", onBodyData)
  incoming.off("end", onBodyEnd)
  incoming.off("error", onBodyError)
}

// Over the limit or past the deadline: the rest is discarded (the answer then closes the connection).
const refuseBody = (read: BodyRead<unknown>, refusal: PayloadTooLarge | BodyTimeout): void => {
  detachBody(read)
  read.incoming.resume()
  read.done(refusal, read.context, read.incoming)
}

function onBodyData(this: Reading, chunk: Buffer): void {
  const read = this[bodyRead]
  if (read === undefined) return
  read.size += chunk.length
  if (read.size > read.maxBodySize) refuseBody(read, new PayloadTooLarge({ limit: read.maxBodySize }))
  else if (read.first === undefined) read.first = chunk
  else (read.rest ??= [read.first]).push(chunk)
}

function onBodyEnd(this: Reading): void {
  const read = this[bodyRead]
  if (read === undefined) return
  detachBody(read)
  read.done(read.rest !== undefined ? Buffer.concat(read.rest) : read.first ?? Buffer.alloc(0), read.context, read.incoming)
}

function onBodyError(this: Reading, error: Error): void {
  const read = this[bodyRead]
  if (read === undefined) return
  detachBody(read)
  read.done(new MalformedPayload({ detail: `body could not be read: ${error.message}` }), read.context, read.incoming)
}

const onBodyTimeout = (read: BodyRead<unknown>): void => {
  read.timer = undefined
  read.watched = false
  refuseBody(read, new BodyTimeout({ timeoutMillis: read.timeoutMillis, received: read.size }))
}

/**
 * Reads a node request body with a limit and a deadline, calling `done` once with the bytes or the refusal.
 * Over the limit or past the deadline it stops collecting and discards the rest (the answer then closes
 * the connection). The deadline is wall-clock time: it bounds a real socket, whatever `Clock` the caller has.
 * Answers a function that stops reading without calling `done`.
 */
const readNodeBody = <C>(
  incoming: IncomingMessage,
  maxBodySize: number,
  timeoutMillis: number,
  done: (result: BodyResult, context: C, incoming: IncomingMessage) => void,
  context: C
): () => void => {
  const read: BodyRead<C> = {
    incoming,
    maxBodySize,
    timeoutMillis,
    done,
    context,
    first: undefined,
    rest: undefined,
    size: 0,
    timer: undefined,
    watched: false,
    deadline: 0
  }
  if (sharesDeadlines(timeoutMillis)) watchDeadline(read as unknown as BodyRead<unknown>)
  else read.timer = setTimeout(onBodyTimeout, timeoutMillis, read as unknown as BodyRead<unknown>)
  ;(incoming as Reading)[bodyRead] = read as unknown as BodyRead<unknown>
  incoming.on("data", onBodyData)
  incoming.on("end", onBodyEnd)
  incoming.on("error", onBodyError)
  return () => {
    if ((incoming as Reading)[bodyRead] === read) detachBody(read as unknown as BodyRead<unknown>)
  }
}

const declaredTooLarge = (contentLength: string | undefined, maxBodySize: number): PayloadTooLarge | undefined =>
  contentLength !== undefined && Number(contentLength) > maxBodySize
    ? new PayloadTooLarge({ limit: maxBodySize, size: Number(contentLength) })
    : undefined

/**
 * Reads the raw body through the platform (a server other than @effect/platform-node) with a limit: refused
 * (413) before reading when `Content-Length` already says it is too big, and by the platform's limited reader.
 */
const readBody = (
  request: HttpServerRequest.HttpServerRequest,
  maxBodySize: number,
  timeoutMillis: number
): Effect.Effect<Uint8Array, PayloadTooLarge | MalformedPayload | BodyTimeout> => {
  const tooLarge = declaredTooLarge(request.headers["content-length"], maxBodySize)
  if (tooLarge !== undefined) return Effect.fail(tooLarge)
  return request.arrayBuffer.pipe(
    Effect.map((buffer) => new Uint8Array(buffer)),
    HttpIncomingMessage.withMaxBodySize(Option.some(maxBodySize)),
    Effect.mapError((error) => new MalformedPayload({ detail: `body could not be read: ${error.message}` })),
    Effect.timeoutFail({ duration: Duration.millis(timeoutMillis), onTimeout: () => new BodyTimeout({ timeoutMillis, received: 0 }) })
  )
}

/** The HTTP handler of one source (for composing your own router). */
export const handler = <A, I>(options: Options<A, I>) => {
  const { immediate, run, viaEffects } = pipeline(options)
  const maxBodySize = options.maxBodySize ?? defaultMaxBodySize
  const bodyTimeout = Duration.toMillis(options.bodyTimeout ?? defaultBodyTimeout)
  // Refused before `process` sees the body: announced here, as `process` announces its own refusals.
  const refused = (error: PayloadTooLarge | MalformedPayload | BodyTimeout) =>
    Effect.zipRight(announceRejected(statusOf(error), error._tag), Effect.succeed(responseOf(answer(Exit.fail(error)))))
  // Any request: the body read as an effect, then `process` (which still takes the immediate path when it can).
  const generic = (request: HttpServerRequest.HttpServerRequest) =>
    respond(Effect.flatMap(
      Effect.tapError(readBody(request, maxBodySize, bodyTimeout), (error) => announceRejected(statusOf(error), error._tag)),
      (body) => run({ headers: request.headers, body })
    ))
  // The body is in (on @effect/platform-node): finished at once when every step can, else as effects.
  const onBody = (body: BodyResult, state: RouteRead, incoming: IncomingMessage): void => {
    if (!(body instanceof Uint8Array)) return state.resume(refused(body))
    const request = { headers: incoming.headers, body }
    const outcome = state.env === undefined ? undefined : immediate(request, state.env, state.guard, state.publisher)
    if (outcome !== undefined && !Effect.isEffect(outcome)) return state.resume(Effect.succeed(acceptedResponse(outcome)))
    state.resume(respond(outcome ?? viaEffects(request)))
  }
  return Effect.withFiberRuntime<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest | Transport.Publisher | ReplayGuard>(
    (fiber) => {
      const context = fiber.currentContext
      const request = Context.unsafeGet(context, HttpServerRequest.HttpServerRequest)
      const incoming = nodeIncoming(request)
      // Not served by node (another platform, a test request): the body is read through the platform.
      if (incoming === undefined) return generic(request)
      const tooLarge = declaredTooLarge(incoming.headers["content-length"], maxBodySize)
      if (tooLarge !== undefined) return refused(tooLarge)
      // Read straight from node's stream (the platform's limited reader destroys the socket when the limit is
      // crossed, which would leave the sender without its 413), and with no fiber step per chunk.
      const env = Telemetry.immediate(context, fiber.getFiberRefs())
      const guard = Context.unsafeGet(context, ReplayGuard)
      const publisher = Context.unsafeGet(context, Transport.Publisher)
      return Effect.async<HttpServerResponse.HttpServerResponse, never, Transport.Publisher | ReplayGuard>((resume) => {
        const cleanup = readNodeBody<RouteRead>(incoming, maxBodySize, bodyTimeout, onBody, { resume, env, guard, publisher })
        return Effect.sync(cleanup)
      })
    }
  )
}

/** What the route's body callback needs to finish a request. */
interface RouteRead {
  readonly resume: (effect: Effect.Effect<HttpServerResponse.HttpServerResponse, never, Transport.Publisher | ReplayGuard>) => void
  readonly env: Telemetry.Immediate | undefined
  readonly guard: ReplayGuard["Type"]
  readonly publisher: Transport.Publisher["Type"]
}

/** The node request under a platform request, when @effect/platform-node serves it. */
const nodeIncoming = (request: HttpServerRequest.HttpServerRequest): IncomingMessage | undefined => {
  try {
    const source = NodeHttpServerRequest.toIncomingMessage(request)
    return source instanceof EventEmitter ? source : undefined
  } catch {
    return undefined
  }
}

const responseOf = (a: Answer): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.unsafeJson(a.body, { status: a.status, headers: a.headers })

/** The 202 / 200 of an accepted request: the same body `answer` gives, rendered without building it first. */
const acceptedJson = (accepted: Accepted): string =>
  accepted.duplicate
    ? `{"status":"duplicate","id":${JSON.stringify(accepted.id)}}`
    : `{"status":"accepted","id":${JSON.stringify(accepted.id)}}`

const acceptedResponse = (accepted: Accepted): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.text(acceptedJson(accepted), { status: accepted.duplicate ? 200 : 202, contentType: "application/json" })

/** Adds a `POST path` route for one source to a router. */
export const route = <A, I>(path: HttpRouter.PathInput, options: Options<A, I>) => HttpRouter.post(path, handler(options))

/**
 * The node:http server settings {@link listen} uses, for servers built around {@link nodeListener}:
 * `http.createServer(Ingress.serverOptions, listener)`. Node's defaults (60 s for headers, 300 s for a whole
 * request, checked every 30 s) let a slow client hold a connection for minutes; these answer 408 sooner.
 * Headers over `maxHeaderSize` (node's default 16 KiB, `--max-http-header-size`) are answered 431 by node.
 */
export const serverOptions = {
  /** Time to receive the request headers. */
  headersTimeout: 10_000,
  /** Time to receive the whole request; above the default body timeout, so the ingress's own 408 comes first. */
  requestTimeout: 30_000,
  /** Idle time of a kept-alive connection between requests. */
  keepAliveTimeout: 5_000,
  /** How often node checks the two timeouts above (its default, 30 s, would double them). */
  connectionsCheckingInterval: 1_000
} as const

/** Where {@link listen} listens, and its server timeouts. */
export interface ListenOptions {
  /** Default 0 (an ephemeral port). */
  readonly port?: number
  /** Default `127.0.0.1`. */
  readonly host?: string
  /** Time to receive the request headers, then 408. Default 10 s. */
  readonly headersTimeout?: Duration.DurationInput
  /** Time to receive a whole request, then 408. Default 30 s; keep it above every route's `bodyTimeout`. */
  readonly requestTimeout?: Duration.DurationInput
  /** Idle time of a kept-alive connection. Default 5 s. */
  readonly keepAliveTimeout?: Duration.DurationInput
}

/**
 * Serves `app` (e.g. a router of {@link route}s) with node:http for the lifetime of the scope and answers
 * its base URL.
 */
export const listen = <E, R>(app: HttpApp.Default<E, R>, options: ListenOptions = {}) =>
  Effect.gen(function*() {
    const host = options.host ?? "127.0.0.1"
    const millis = (input: Duration.DurationInput | undefined, fallback: number) =>
      input === undefined ? fallback : Duration.toMillis(input)
    const requestTimeout = millis(options.requestTimeout, serverOptions.requestTimeout)
    const server = yield* NodeHttpServer.make(() =>
      createServer({
        ...serverOptions,
        requestTimeout,
        // node refuses a headers timeout above the request timeout.
        headersTimeout: Math.min(millis(options.headersTimeout, serverOptions.headersTimeout), requestTimeout || Infinity),
        keepAliveTimeout: millis(options.keepAliveTimeout, serverOptions.keepAliveTimeout)
      }), { port: options.port ?? 0, host })
    yield* server.serve(app)
    const address = server.address
    const port = address._tag === "TcpAddress" ? address.port : 0
    return { port, url: `http://${host.includes(":") ? `[${host}]` : host}:${port}` }
  })

/**
 * The same ingress as a plain node:http request listener, for servers not built on @effect/platform (or
 * when its per-request overhead matters): identical checks, answers and persistence, run on the current
 * runtime. Requests to other paths or methods get 404 / 405. The server's own timeouts are yours to set:
 * create it with {@link serverOptions}.
 */
export const nodeListener = <A, I>(path: string, options: Options<A, I>) =>
  Effect.map(Effect.runtime<Transport.Publisher | ReplayGuard>(), (runtime) => {
    const { immediate, viaEffects } = pipeline(options)
    const runCallback = Runtime.runCallback(runtime)
    // The runtime is fixed, so what the immediate path needs from it is read once, not per request.
    const env = Telemetry.immediate(runtime.context, runtime.fiberRefs)
    const guard = Context.get(runtime.context, ReplayGuard)
    const publisher = Context.get(runtime.context, Transport.Publisher)
    const maxBodySize = options.maxBodySize ?? defaultMaxBodySize
    const bodyTimeout = Duration.toMillis(options.bodyTimeout ?? defaultBodyTimeout)
    const send = (res: ServerResponse, a: Answer) => {
      const payload = JSON.stringify(a.body)
      res.writeHead(a.status, { ...a.headers, "content-type": "application/json", "content-length": Buffer.byteLength(payload) })
      res.end(payload)
    }
    // Refused before `process` sees the body: announced on the runtime (observers live in its fibers).
    const refuse = (res: ServerResponse, error: PayloadTooLarge | MalformedPayload | BodyTimeout): void => {
      runCallback(announceRejected(statusOf(error), error._tag), { onExit: () => send(res, answer(Exit.fail(error))) })
    }
    // The body is in: one shared callback (the response travels as the read's context), no closure per request.
    const onBody = (body: BodyResult, res: ServerResponse, req: IncomingMessage): void => {
      if (!(body instanceof Uint8Array)) return refuse(res, body)
      const request = { headers: req.headers, body }
      const outcome = env === undefined ? undefined : immediate(request, env, guard, publisher)
      if (outcome !== undefined && !Effect.isEffect(outcome)) return sendAccepted(res, outcome)
      runCallback(outcome ?? viaEffects(request), { onExit: (exit) => send(res, answer(exit)) })
    }
    return (req: IncomingMessage, res: ServerResponse): void => {
      const url = req.url ?? "/"
      const query = url.indexOf("?")
      if ((query === -1 ? url : url.slice(0, query)) !== path) {
        return send(res, { status: 404, headers: {}, body: { error: "RouteNotFound", message: `no route for ${url}` } })
      }
      if (req.method !== "POST") return send(res, { status: 405, headers: { allow: "POST" }, body: { error: "MethodNotAllowed", message: "use POST" } })
      const tooLarge = declaredTooLarge(req.headers["content-length"], maxBodySize)
      if (tooLarge !== undefined) {
        req.resume()
        return refuse(res, tooLarge)
      }
      readNodeBody(req, maxBodySize, bodyTimeout, onBody, res)
    }
  })

/**
 * The 202 / 200 of an accepted request, written straight: the same bytes as `answer` rendered through
 * `JSON.stringify`, without building the answer object first.
 */
const sendAccepted = (res: ServerResponse, accepted: Accepted): void => {
  const payload = acceptedJson(accepted)
  res.writeHead(accepted.duplicate ? 200 : 202, { "content-type": "application/json", "content-length": Buffer.byteLength(payload) })
  res.end(payload)
}
