/**
 * What a poller reads: a function fetching one page from a cursor, and ready-made adapters for the common
 * shapes of HTTP listing APIs: `?since=<timestamp>` ({@link since}), an opaque next cursor
 * ({@link nextCursor}), `ETag`/`If-None-Match` ({@link etag}) and `Link: <…>; rel="next"` ({@link linkNext}).
 *
 * Every polled item carries a stable `id`: the same item (in the same version) read twice, from two
 * overlapping pages or by two instances, gets the same envelope id, so the idempotency store or the inbox
 * suppresses the second copy downstream.
 */
import { Failure, Telemetry, TraceContext } from "@bulwark/core"
import { Data, Duration, Effect, Option, ParseResult, Schema } from "effect"

/** One item of a page, with what the poller needs to publish it. */
export interface Polled<A> {
  /** Stable across reads: the same item in the same version has the same id (e.g. `id@updatedAt`). */
  readonly id: string
  /** The ordering key of its envelope (the item's own id, usually). */
  readonly subject: string
  /** When the item last changed, epoch millis, when known (for the lag metric). */
  readonly time?: number
  readonly data: A
}

/** One page: its items, the cursor to save once they are published, and whether more is waiting now. */
export interface Page<A> {
  readonly items: ReadonlyArray<Polled<A>>
  /** The cursor after this page (saved with its outbox rows); `undefined` keeps the current one. */
  readonly next: string | undefined
  /** The source has more right away: the poller fetches again without waiting for its interval. */
  readonly more: boolean
}

/** Fetches one page after `cursor` (none on the very first poll). */
export type FetchPage<A, E = never, R = never> = (cursor: Option.Option<string>) => Effect.Effect<Page<A>, E, R>

/**
 * The source answered with an error status. Classified by status (`Failure.httpStatusRule`): 429 and 5xx
 * transient with their `Retry-After` hint, 401/403 permanent `auth`, other 4xx permanent.
 */
export class PollHttpError extends Data.TaggedError("PollHttpError")<{
  readonly url: string
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly excerpt: string
}> {
  override get message(): string {
    return `GET ${redactQuery(this.url)} answered ${this.status}: ${this.excerpt}`
  }
}

/** The request could not be made (connection refused, reset, timed out). Transient `dependency`. */
export class PollFetchError extends Data.TaggedError("PollFetchError")<{
  readonly url: string
  readonly cause: unknown
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("transient", "dependency")
  }
  override get message(): string {
    return `GET ${redactQuery(this.url)} failed: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** The answer is not what the adapter expects (not JSON, items that do not match the schema). Permanent `schema`. */
export class PollDecodeError extends Data.TaggedError("PollDecodeError")<{
  readonly url: string
  readonly detail: string
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("permanent", "schema")
  }
  override get message(): string {
    return `GET ${redactQuery(this.url)}: unreadable answer: ${this.detail}`
  }
}

/** What the HTTP adapters fail with. */
export type HttpError = PollHttpError | PollFetchError | PollDecodeError

// Query strings can hold tokens (`?api_key=`): errors and spans show the path only.
const redactQuery = (url: string) => url.replace(/\?.*$/, "?…")

/** An HTTP answer as the adapters read it. */
export interface Response {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  /** The parsed JSON body; `undefined` for 304. */
  readonly body: unknown
}

/** Settings shared by the HTTP adapters. */
export interface HttpOptions<A, I> {
  /** The listing's URL (query parameters the adapter adds are appended). */
  readonly url: string
  /** Extra request headers (an `Authorization`, say). */
  readonly headers?: Readonly<Record<string, string>>
  /** Each item's schema: an item that does not match fails the page with {@link PollDecodeError}. */
  readonly schema: Schema.Schema<A, I>
  /** The items of a body. Default: the body when it is an array, else its `items` or `data` field. */
  readonly itemsOf?: (body: unknown) => unknown
  /** The item's identity (without its version). */
  readonly key: (item: A) => string
  /** When the item last changed (epoch millis), when the source says. */
  readonly time?: (item: A) => number
  /** Per-request timeout. Default 10 s. */
  readonly timeout?: Duration.DurationInput
  /**
   * Makes one GET. Default {@link get} (the global `fetch`); pass another HTTP client here (a proxy, signed
   * requests, or a simulated source).
   */
  readonly request?: (url: string, options: RequestOptions) => Effect.Effect<Response, HttpError>
}

/** What {@link get} takes besides the URL. */
export interface RequestOptions {
  readonly headers?: Readonly<Record<string, string>>
  readonly timeout?: Duration.DurationInput
}

const defaultItems = (body: unknown): unknown =>
  Array.isArray(body) ? body : typeof body === "object" && body !== null
    ? (body as { items?: unknown; data?: unknown }).items ?? (body as { data?: unknown }).data
    : undefined

/** One GET, as a `GET` client span carrying the trace context; a status ≥ 400 fails with {@link PollHttpError}. */
export const get = (
  url: string,
  options: RequestOptions = {}
): Effect.Effect<Response, PollHttpError | PollFetchError | PollDecodeError> =>
  Effect.gen(function*() {
    const trace = yield* TraceContext.currentHeaders
    const timeout = Duration.toMillis(options.timeout ?? "10 seconds")
    const response = yield* Effect.tryPromise({
      try: (signal) =>
        fetch(url, {
          headers: { accept: "application/json", ...trace, ...options.headers },
          signal: AbortSignal.any([signal, AbortSignal.timeout(timeout)])
        }),
      catch: (cause) => new PollFetchError({ url, cause })
    })
    const headers: Record<string, string> = {}
    response.headers.forEach((value, name) => headers[name] = value)
    yield* Telemetry.annotate({ [Telemetry.Attr.httpStatus]: response.status })
    const text = yield* Effect.tryPromise({ try: () => response.text(), catch: (cause) => new PollFetchError({ url, cause }) })
    if (response.status >= 400) {
      return yield* new PollHttpError({ url, status: response.status, headers, excerpt: text.slice(0, 200) })
    }
    if (response.status === 304) return { status: 304, headers, body: undefined }
    const body = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (error) => new PollDecodeError({ url, detail: error instanceof Error ? error.message : String(error) })
    })
    return { status: response.status, headers, body }
  }).pipe(
    Telemetry.httpClientSpan({ method: "GET", serverAddress: hostOf(url) })
  )

const hostOf = (url: string) => {
  try {
    return new URL(url).host
  } catch {
    return "(invalid url)"
  }
}

const decodeItems = <A, I>(url: string, options: HttpOptions<A, I>, body: unknown) => {
  const raw = (options.itemsOf ?? defaultItems)(body)
  if (!Array.isArray(raw)) return Effect.fail(new PollDecodeError({ url, detail: "the answer holds no array of items" }))
  return Schema.decodeUnknown(Schema.Array(options.schema))(raw).pipe(
    Effect.mapError((error) => new PollDecodeError({ url, detail: ParseResult.TreeFormatter.formatErrorSync(error) }))
  )
}

const polled = <A, I>(options: HttpOptions<A, I>, item: A, versioned: boolean): Polled<A> => {
  const key = options.key(item)
  const time = options.time?.(item)
  return {
    id: versioned && time !== undefined ? `${key}@${time}` : key,
    subject: key,
    ...(time === undefined ? {} : { time }),
    data: item
  }
}

const withQuery = (url: string, params: Record<string, string | undefined>) => {
  const parsed = new URL(url)
  for (const [name, value] of Object.entries(params)) if (value !== undefined) parsed.searchParams.set(name, value)
  return parsed.toString()
}

// --- ?since= ----------------------------------------------------------------------------------------------

/** Settings of {@link since}. */
export interface SinceOptions<A, I> extends HttpOptions<A, I> {
  /** When the item last changed: required, it is what the cursor advances on. */
  readonly time: (item: A) => number
  /** The query parameter. Default `since`. */
  readonly param?: string
  /** How the timestamp is written in the query. Default ISO 8601. */
  readonly format?: (millis: number) => string
  /**
   * How far back each request reaches before the newest time seen. Sources commit late (a row stamped
   * 10:00:00.900 becomes visible after a poll at 10:00:01 read up to 10:00:01): the overlap reads them
   * again; the items already published in the overlap are remembered in the cursor and skipped. Default 5 s.
   */
  readonly overlap?: Duration.DurationInput
  /** Asks for at most this many items (`limit` parameter); a full page means more is waiting. */
  readonly limit?: number
  /** The query parameter of `limit`. Default `limit`. */
  readonly limitParam?: string
}

interface SinceCursor {
  /** The newest item time published. */
  readonly t: number
  /** Ids published with a time within the overlap of `t`. */
  readonly seen: ReadonlyArray<string>
}

const SinceCursorJson = Schema.parseJson(Schema.Struct({ t: Schema.Number, seen: Schema.Array(Schema.String) }))

/**
 * `GET url?since=<t − overlap>`: items changed since a timestamp, oldest first or not. Each item's id is
 * `key@time`, so a later change of the same item is a new event while a re-read is the same one. The
 * cursor holds the newest time published and the ids within the overlap, which the boundary re-reads skip.
 *
 * The source must answer every item changed at or after `since` (inclusive), oldest first when it limits
 * the page; an item stamped earlier than the newest time seen minus the overlap when it becomes visible is
 * not read, and more than `limit` items changed at the very same millisecond cannot all be paged through (the
 * poller steps past that instant with a warning naming it).
 */
export const since = <A, I>(options: SinceOptions<A, I>): FetchPage<A, HttpError> => {
  const overlap = Duration.toMillis(options.overlap ?? "5 seconds")
  const format = options.format ?? ((millis: number) => new Date(millis).toISOString())
  const param = options.param ?? "since"
  return (cursor) =>
    Effect.gen(function*() {
      const state: SinceCursor = Option.isSome(cursor)
        ? yield* Schema.decode(SinceCursorJson)(cursor.value).pipe(
          Effect.mapError((error) => new PollDecodeError({ url: options.url, detail: `saved cursor: ${error.message}` }))
        )
        : { t: Number.NEGATIVE_INFINITY, seen: [] }
      const seen = new Set(state.seen)
      const fresh: Array<Polled<A>> = []
      const times = new Map<string, number>()
      let newest = state.t
      let from = Number.isFinite(state.t) ? Math.max(0, state.t - overlap) : undefined
      let full = false
      // A full page of items already published (the overlap holds more than `limit` of them) would come back
      // the same forever: read on from that page's newest time, within this one fetch.
      for (let round = 0; round < maxRounds; round++) {
        const url = withQuery(options.url, {
          [param]: from === undefined ? undefined : format(from),
          [options.limitParam ?? "limit"]: options.limit === undefined ? undefined : String(options.limit)
        })
        const response = yield* (options.request ?? get)(url, options)
        const items = yield* decodeItems(url, options, response.body)
        let pageNewest = Number.NEGATIVE_INFINITY
        for (const item of items) {
          const one = polled(options, item, true)
          const time = one.time!
          if (time > pageNewest) pageNewest = time
          if (seen.has(one.id) || time < state.t - overlap) continue
          seen.add(one.id)
          times.set(one.id, time)
          fresh.push(one)
          if (time > newest) newest = time
        }
        full = options.limit !== undefined && items.length >= options.limit
        if (fresh.length > 0 || !full) break
        if (from !== undefined && pageNewest <= from) {
          // More than `limit` items at one instant cannot be paged by time: step past it (documented above), and
          // say so, since items of that instant beyond the page are not read.
          yield* Effect.logWarning(
            `poll: more than ${options.limit} items changed at ${format(from)}; the source cannot page through one instant, so the poller steps past it and items of that instant beyond the first page are not read (raise \`limit\`)`
          ).pipe(Effect.annotateLogs({ url: redactQuery(options.url) }))
          from = from + 1
        } else {
          from = pageNewest
        }
      }
      // Keep only what a later request can still return: the ids within the overlap of the new newest time.
      const keep = state.seen.filter((id) => timeOfId(id) >= newest - overlap)
      for (const [id, time] of times) if (time >= newest - overlap) keep.push(id)
      const next = fresh.length === 0 ? undefined : JSON.stringify({ t: newest, seen: keep } satisfies SinceCursor)
      return { items: fresh, next, more: full && fresh.length > 0 }
    })
}

// Requests one fetch may make to get past pages of items already published.
const maxRounds = 50

// An id written by `since` ends with `@<time>`.
const timeOfId = (id: string) => {
  const at = id.lastIndexOf("@")
  const time = at < 0 ? Number.NaN : Number(id.slice(at + 1))
  return Number.isFinite(time) ? time : Number.POSITIVE_INFINITY
}

// --- opaque next cursor -----------------------------------------------------------------------------------

/** Settings of {@link nextCursor}. */
export interface NextCursorOptions<A, I> extends HttpOptions<A, I> {
  /** The next cursor in a body; `undefined` (or null) when the listing has nothing after this page. */
  readonly nextOf: (body: unknown) => string | null | undefined
  /** The query parameter carrying the cursor. Default `cursor`. */
  readonly param?: string
}

/**
 * `GET url?cursor=<next>`: the source hands out an opaque cursor with each page. A page without one keeps
 * the current cursor (the poller asks again from it later); ids are the items' keys (versioned by `time`
 * when given).
 */
export const nextCursor = <A, I>(options: NextCursorOptions<A, I>): FetchPage<A, HttpError> => (cursor) =>
  Effect.gen(function*() {
    const url = withQuery(options.url, { [options.param ?? "cursor"]: Option.getOrUndefined(cursor) })
    const response = yield* (options.request ?? get)(url, options)
    const items = yield* decodeItems(url, options, response.body)
    const next = options.nextOf(response.body) ?? undefined
    return {
      items: items.map((item) => polled(options, item, options.time !== undefined)),
      next,
      more: next !== undefined && items.length > 0
    }
  })

// --- ETag / If-None-Match ---------------------------------------------------------------------------------

/**
 * The whole listing, asked with `If-None-Match: <etag of the last answer>`: a `304 Not Modified` is an
 * empty page at no cost to the source. Every changed answer yields all its items again; their stable ids
 * (versioned by `time` when given) let the idempotency store drop the ones already handled.
 */
export const etag = <A, I>(options: HttpOptions<A, I>): FetchPage<A, HttpError> => (cursor) =>
  Effect.gen(function*() {
    const headers = Option.isSome(cursor) ? { ...options.headers, "if-none-match": cursor.value } : options.headers
    const response = yield* (options.request ?? get)(options.url, { ...options, ...(headers === undefined ? {} : { headers }) })
    if (response.status === 304) return { items: [], next: undefined, more: false }
    const items = yield* decodeItems(options.url, options, response.body)
    return {
      items: items.map((item) => polled(options, item, options.time !== undefined)),
      next: response.headers["etag"],
      more: false
    }
  })

// --- Link: rel="next" -------------------------------------------------------------------------------------

/** The `rel="next"` target of a `Link` header (RFC 8288), resolved against `base`. */
export const nextLink = (link: string | undefined, base: string): string | undefined => {
  if (link === undefined) return undefined
  for (const part of link.split(/,(?=\s*<)/)) {
    const match = /^\s*<([^>]*)>(.*)$/.exec(part)
    if (match && /;\s*rel\s*=\s*"?(?:[^";]*\s)?next(?:\s[^";]*)?"?\s*(?:;|$)/i.test(match[2]!)) {
      try {
        return new URL(match[1]!, base).toString()
      } catch {
        return undefined
      }
    }
  }
  return undefined
}

/**
 * Pages linked by `Link: <url>; rel="next"` (GitHub, many REST APIs). The cursor is the URL of the next page;
 * on the last page it stays that page's URL, so the poller reads it again for new items (their stable ids
 * let the idempotency store drop those already handled).
 */
export const linkNext = <A, I>(options: HttpOptions<A, I>): FetchPage<A, HttpError> => (cursor) =>
  Effect.gen(function*() {
    const url = Option.getOrElse(cursor, () => options.url)
    const response = yield* (options.request ?? get)(url, options)
    const items = yield* decodeItems(url, options, response.body)
    const next = nextLink(response.headers["link"], url)
    return {
      items: items.map((item) => polled(options, item, options.time !== undefined)),
      next: next ?? url,
      more: next !== undefined
    }
  })
