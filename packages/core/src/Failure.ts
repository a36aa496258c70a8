/**
 * The error taxonomy shared by every Bulwark pattern.
 *
 * Two questions are kept apart on purpose:
 * - *classification*: should this be tried again? (`transient` / `permanent`), used by retry and breakers;
 * - *category*: what kind of failure is it? (`schema`, `auth`, `timeout`, `dependency`, `unknown`),
 *   used by the dead-letter queue for triage.
 *
 * A validation error is permanent and `schema`; a 503 is transient and `dependency`; a 401 is permanent and
 * `auth`. Users teach Bulwark about their own errors either by implementing {@link Classified} on the
 * error class or by installing rules with {@link withRules}.
 */
import { Cause, Clock, Data, Duration, FiberRef, Effect, Option, Predicate, Schema } from "effect"
import { dual } from "effect/Function"
import { globalValue } from "effect/GlobalValue"

/** Whether a failure is worth another attempt. */
export const Classification = Schema.Literal("transient", "permanent")
/** Whether a failure is worth another attempt. */
export type Classification = typeof Classification.Type

/** The failure category used for dead-letter triage (the runbook's categories). */
export const Category = Schema.Literal("schema", "auth", "timeout", "dependency", "unknown")
/** The failure category used for dead-letter triage (the runbook's categories). */
export type Category = typeof Category.Type

/** Every category, in triage order. */
export const categories: ReadonlyArray<Category> = Category.literals

/** What Bulwark concluded about one failure. */
export interface Verdict {
  readonly classification: Classification
  readonly category: Category
  /** A hint from the failure itself (e.g. HTTP `Retry-After`) of when to try again. */
  readonly retryAfter?: Duration.Duration | undefined
}

/** Builds a {@link Verdict}. */
export const verdict = (
  classification: Classification,
  category: Category,
  retryAfter?: Duration.DurationInput
): Verdict => retryAfter === undefined
  ? { classification, category }
  : { classification, category, retryAfter: Duration.decode(retryAfter) }

/** The symbol an error implements to classify itself. */
export const ClassifiedTypeId: unique symbol = Symbol.for("@bulwark/core/Failure/Classified")

/** An error that knows its own verdict. */
export interface Classified {
  readonly [ClassifiedTypeId]: Verdict
}

/** Whether a value carries its own verdict. */
export const isClassified = (u: unknown): u is Classified => Predicate.hasProperty(u, ClassifiedTypeId)

/**
 * A rule answers for the errors it recognises and passes (`None`) on the rest. `now` (epoch milliseconds,
 * from `Clock` when classified through {@link classify}) lets a rule turn an absolute hint such as an HTTP
 * date into a delay; rules that do not need it ignore it.
 */
export type Rule = (error: unknown, now?: number) => Option.Option<Verdict>

/**
 * A transient failure of a named category, for code that wants to say so without its own error class.
 * In-process only; use {@link FailureRecord} to persist it.
 */
export class TransientError extends Data.TaggedError("TransientError")<{
  readonly category: Category
  readonly message: string
  readonly cause?: unknown
  readonly retryAfter?: Duration.Duration
}> {
  get [ClassifiedTypeId](): Verdict {
    return { classification: "transient", category: this.category, retryAfter: this.retryAfter }
  }
}

/** A permanent failure of a named category: retrying cannot help, dead-letter it. */
export class PermanentError extends Data.TaggedError("PermanentError")<{
  readonly category: Category
  readonly message: string
  readonly cause?: unknown
}> {
  get [ClassifiedTypeId](): Verdict {
    return { classification: "permanent", category: this.category }
  }
}

const statusOf = (error: unknown): number | undefined => {
  if (!Predicate.isObject(error)) return undefined
  const direct = (error as { status?: unknown }).status
  if (typeof direct === "number") return direct
  const response = (error as { response?: unknown }).response
  if (Predicate.isObject(response)) {
    const status = (response as { status?: unknown }).status
    if (typeof status === "number") return status
  }
  return undefined
}

const months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
const imfFixdate = /^(?:mon|tue|wed|thu|fri|sat|sun), ([0-9]{2}) ([a-z]{3}) ([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) gmt$/
const rfc850Date =
  /^(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday), ([0-9]{2})-([a-z]{3})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) gmt$/
const asctimeDate = /^(?:mon|tue|wed|thu|fri|sat|sun) ([a-z]{3}) ([ 0-9][0-9]) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([0-9]{4})$/

// The longest delay honoured from delta-seconds: 2^31 s, the bound RFC 9111 §1.2.2 gives caches for the
// same kind of number, so an absurd value cannot become an infinite (or NaN) wait.
const maxDeltaSeconds = 2 ** 31

const utc = (year: number, month: string, day: number, hour: number, minute: number, second: number) => {
  const m = months.indexOf(month)
  if (m < 0 || hour > 23 || minute > 59 || second > 60) return undefined
  const time = Date.UTC(year, m, day, hour, minute, Math.min(second, 59))
  // Date.UTC rolls 31 Feb over into March; a date that does not exist is garbage, not a hint.
  return new Date(time).getUTCDate() === day ? time : undefined
}

/**
 * Parses an HTTP date in any of the three forms RFC 9110 §5.6.7 obliges a recipient to accept
 * (IMF-fixdate, obsolete RFC 850, asctime) into epoch milliseconds; anything else is `undefined`.
 * `Date.parse` is not used because it accepts garbage ("3.5", "-5", "soon 1") as dates.
 */
export const parseHttpDate = (value: string, now: number): number | undefined => {
  const text = value.trim().toLowerCase()
  let match = imfFixdate.exec(text)
  if (match) return utc(Number(match[3]), match[2]!, Number(match[1]), Number(match[4]), Number(match[5]), Number(match[6]))
  match = rfc850Date.exec(text)
  if (match) {
    // A two-digit year more than 50 years ahead means the most recent past year with those digits (§5.6.7).
    const current = new Date(now).getUTCFullYear()
    let year = Math.floor(current / 100) * 100 + Number(match[3])
    if (year > current + 50) year -= 100
    return utc(year, match[2]!, Number(match[1]), Number(match[4]), Number(match[5]), Number(match[6]))
  }
  match = asctimeDate.exec(text)
  if (match) return utc(Number(match[6]), match[1]!, Number(match[2]!.trim()), Number(match[3]), Number(match[4]), Number(match[5]))
  return undefined
}

/**
 * Parses a `Retry-After` value (RFC 9110 §10.2.3: delta-seconds or an HTTP date) relative to `now`, into
 * milliseconds. A date in the past means "now" (0); garbage, negative or fractional numbers and empty
 * values are `undefined` (no hint), so a malformed header never shortens or lengthens a backoff.
 */
export const parseRetryAfter = (value: string | undefined, now: number): number | undefined => {
  if (value === undefined) return undefined
  const trimmed = value.trim()
  if (/^[0-9]+$/.test(trimmed)) return Math.min(Number(trimmed), maxDeltaSeconds) * 1000
  const date = parseHttpDate(trimmed, now)
  return date === undefined ? undefined : Math.max(0, date - now)
}

// One header's value from a fetch `Headers`, a node `IncomingHttpHeaders` or any plain record; header names
// are case-insensitive (RFC 9110 §5.1), and a repeated header keeps its first value.
const headerOf = (headers: unknown, name: string): string | undefined => {
  if (!Predicate.isObject(headers)) return undefined
  const get = (headers as { get?: unknown }).get
  if (typeof get === "function") {
    try {
      const value: unknown = get.call(headers, name)
      // `Headers.get` joins repeated fields with ", "; an HTTP date holds a comma itself, so the joined value
      // is parsed whole (two hints at once are then garbage, i.e. no hint).
      if (typeof value === "string") return value
      if (Array.isArray(value) && typeof value[0] === "string") return value[0]
    } catch {
      // A `get` that is not a header lookup (it threw): the error carries no readable header.
    }
    return undefined
  }
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() !== name) continue
    if (typeof value === "string") return value
    if (Array.isArray(value) && typeof value[0] === "string") return value[0]
  }
  return undefined
}

const headersOf = (error: object): unknown => {
  const own = (error as { headers?: unknown }).headers
  if (own !== undefined) return own
  const response = (error as { response?: unknown }).response
  return Predicate.isObject(response) ? (response as { headers?: unknown }).headers : undefined
}

const retryAfterOf = (error: unknown, now: number): Duration.Duration | undefined => {
  if (!Predicate.isObject(error)) return undefined
  const hint = (error as { retryAfter?: unknown }).retryAfter
  if (Duration.isDuration(hint)) return hint
  if (typeof hint === "number" && Number.isFinite(hint) && hint >= 0) return Duration.millis(hint)
  const header = parseRetryAfter(headerOf(headersOf(error), "retry-after"), now)
  return header === undefined ? undefined : Duration.millis(header)
}

/**
 * Classifies by HTTP status, wherever the error carries one (`error.status` or `error.response.status`).
 * 401/403 are permanent auth failures; 408 is a timeout; 429 and 5xx are transient dependency failures;
 * other 4xx are permanent (the request itself is wrong). The retry hint is the error's own `retryAfter`
 * (milliseconds or a Duration) or else its `Retry-After` header (`error.headers` or `error.response.headers`,
 * a `Headers` or a plain record), parsed with {@link parseRetryAfter}.
 */
export const httpStatusRule: Rule = (error, now = Date.now()) => {
  const status = statusOf(error)
  if (status === undefined || status < 400) return Option.none()
  const hint = retryAfterOf(error, now)
  if (status === 401 || status === 403) return Option.some(verdict("permanent", "auth"))
  if (status === 408 || status === 504) return Option.some(verdict("transient", "timeout", hint))
  if (status === 429 || status >= 500) return Option.some(verdict("transient", "dependency", hint))
  return Option.some(verdict("permanent", "unknown"))
}

const tagOf = (error: unknown): string | undefined =>
  Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" ? error._tag : undefined

/** Effect's own failures: schema parse errors are permanent `schema`; timeouts are transient `timeout`. */
export const effectRule: Rule = (error) => {
  switch (tagOf(error)) {
    case "ParseError":
    case "EnvelopeDecodeError":
      return Option.some(verdict("permanent", "schema"))
    case "TimeoutException":
      return Option.some(verdict("transient", "timeout"))
    default:
      return Option.none()
  }
}

const selfRule: Rule = (error) => isClassified(error) ? Option.some(error[ClassifiedTypeId]) : Option.none()

/** The verdict when no rule recognises an error: transient, so an unknown failure is retried, never dropped. */
export const fallback: Verdict = { classification: "transient", category: "unknown" }

/** The rules in force when the user has installed none. */
export const defaultRules: ReadonlyArray<Rule> = [selfRule, effectRule, httpStatusRule]

/** The rules in force for the current fiber; first match wins. */
export const currentRules: FiberRef.FiberRef<ReadonlyArray<Rule>> = globalValue(
  Symbol.for("@bulwark/core/Failure/currentRules"),
  () => FiberRef.unsafeMake<ReadonlyArray<Rule>>(defaultRules)
)

/** Classifies with an explicit rule list; first match wins, then {@link fallback}. `now` defaults to the wall clock. */
export const classifyWith = (rules: ReadonlyArray<Rule>, error: unknown, now: number = Date.now()): Verdict => {
  for (const rule of rules) {
    const answer = rule(error, now)
    if (Option.isSome(answer)) return answer.value
  }
  return fallback
}

/** Classifies an error with the rules of the current fiber, at the time of the fiber's `Clock`. */
export const classify = (error: unknown): Effect.Effect<Verdict> =>
  Effect.zipWith(FiberRef.get(currentRules), Clock.currentTimeMillis, (rules, now) => classifyWith(rules, error, now))

/** Classifies the failure inside a `Cause`: interruption and defects are transient `unknown` unless a rule says otherwise. */
export const classifyCause = <E>(cause: Cause.Cause<E>): Effect.Effect<Verdict> =>
  Option.match(Cause.failureOption(cause), {
    onNone: () => classify(Cause.squash(cause)),
    onSome: classify
  })

/**
 * Runs an effect with extra rules ahead of the ones in force: the way users classify their own errors.
 *
 * @example
 * program.pipe(Failure.withRules([Failure.ruleFor(isCardDeclined, Failure.verdict("permanent", "unknown"))]))
 */
export const withRules: {
  (rules: ReadonlyArray<Rule>): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, rules: ReadonlyArray<Rule>): Effect.Effect<A, E, R>
} = dual(2, <A, E, R>(self: Effect.Effect<A, E, R>, rules: ReadonlyArray<Rule>) =>
  Effect.locallyWith(self, currentRules, (current) => [...rules, ...current]))

/** A rule from a refinement and the verdict for what it matches. */
export const ruleFor = (matches: (error: unknown) => boolean, answer: Verdict | ((error: unknown) => Verdict)): Rule =>
(error) => matches(error) ? Option.some(typeof answer === "function" ? answer(error) : answer) : Option.none()

/** A rule for errors with a given `_tag`. */
export const ruleForTag = (tag: string, answer: Verdict): Rule => ruleFor((error) => tagOf(error) === tag, answer)

/**
 * An error as it is persisted or sent (dead-letter entries, outbox rows): a plain, schema-encoded record
 * that survives a process restart, unlike the error object itself.
 */
export class FailureRecord extends Schema.Class<FailureRecord>("@bulwark/core/FailureRecord")({
  tag: Schema.String,
  message: Schema.String,
  classification: Classification,
  category: Category,
  status: Schema.optional(Schema.Number),
  detail: Schema.optional(Schema.String),
  /** The error's own fields as JSON, when its class is a schema (made to be persisted, e.g. a retry history). */
  fields: Schema.optional(Schema.String)
}) {}

const messageOf = (error: unknown): string => {
  if (error instanceof Error) return error.message || error.name
  if (Predicate.hasProperty(error, "message") && typeof error.message === "string") return error.message
  if (typeof error === "string") return error
  try {
    return JSON.stringify(error) ?? String(error)
  } catch {
    return String(error)
  }
}

const detailLimit = 4096
const fieldsLimit = 16_384

// Only errors declared as schemas are persisted field by field: their author chose what they carry, so
// nothing an arbitrary error happens to hold (a request config, a credential) leaks into a dead-letter row.
const fieldsOf = (error: unknown): string | undefined => {
  if (!Predicate.isObject(error)) return undefined
  const constructor = (error as { constructor?: unknown }).constructor
  if (!Schema.isSchema(constructor)) return undefined
  const encoded = Schema.encodeUnknownEither(constructor as Schema.Schema<unknown, unknown>)(error)
  if (encoded._tag === "Left") return undefined
  try {
    return JSON.stringify(encoded.right, (_, value) => value instanceof Uint8Array ? `<${value.length} bytes>` : value)
      .slice(0, fieldsLimit)
  } catch {
    return undefined
  }
}

/** Turns any error and its verdict into a {@link FailureRecord}; the detail is bounded so a huge error cannot bloat a row. */
export const toRecord = (error: unknown, verdict: Verdict): FailureRecord => {
  const status = statusOf(error)
  const tag = tagOf(error) ?? (error instanceof Error ? error.name : typeof error)
  const detail = error instanceof Error && error.stack ? error.stack : undefined
  const fields = fieldsOf(error)
  return new FailureRecord({
    tag,
    message: messageOf(error).slice(0, detailLimit),
    classification: verdict.classification,
    category: verdict.category,
    ...(status !== undefined ? { status } : {}),
    ...(detail !== undefined ? { detail: detail.slice(0, detailLimit) } : {}),
    ...(fields !== undefined ? { fields } : {})
  })
}

/** Classifies an error and records it in one step. */
export const record = (error: unknown): Effect.Effect<FailureRecord> =>
  Effect.map(classify(error), (v) => toRecord(error, v))
