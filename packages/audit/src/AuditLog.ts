/**
 * The audit log port (its tag lives in `@bulwark/core`, so that every package writes through it without
 * depending on a driver) and what its drivers share: the redaction hook and the batching writer.
 *
 * Drivers: `AuditLog/Memory` (in-process, for tests and the simulator) and `AuditLog/Sql` (PGlite and
 * PostgreSQL, batched inserts, one partition per day, retention by dropping whole days).
 */
import { AuditLog as Port, Redaction } from "@bulwark/core"
import type { Duration } from "effect"

/** The audit log service tag (from `@bulwark/core`). */
export const AuditLog = Port.AuditLog
/** The audit log service tag (from `@bulwark/core`). */
export type AuditLog = Port.AuditLog
/** One audit entry. */
export const Entry = Port.Entry
/** One audit entry. */
export type Entry = Port.Entry
/** The audit log failed. Transient `dependency`. */
export const AuditLogError = Port.AuditLogError
/** The audit log failed. Transient `dependency`. */
export type AuditLogError = Port.AuditLogError
/** A query over the log. */
export type Query = Port.Query
/** An entry with its position. */
export type Positioned = Port.Positioned
/** The whole story of one event, following causation. */
export const story = Port.story

/** Settings every driver takes. */
export interface Options {
  /**
   * The redaction hook: sees every entry before it is stored and answers what to store, or `undefined` to
   * store nothing. Runs after the defaults (sensitive `detail` keys removed, messages dropped unless kept).
   */
  readonly redact?: (entry: Entry) => Entry | undefined
  /**
   * Which `published` messages keep their payload and headers, for replay from history: `true` (all), a list
   * of topics, or a predicate. Default: none (an entry says what happened, not what was said).
   */
  readonly keepMessages?: boolean | ReadonlyArray<string> | ((entry: Entry) => boolean)
  /** Entries written per batch. Default 500. */
  readonly maxBatch?: number
  /** Entries held while storage is slow or away; beyond, new entries are dropped (and counted). Default 100,000. */
  readonly maxBuffered?: number
  /** Longest time an entry waits in the buffer before its batch is written. Default 200 ms. */
  readonly flushInterval?: Duration.DurationInput
}

/** The default redaction: sensitive `detail` keys removed, messages dropped unless {@link Options.keepMessages} keeps them. */
export const defaultRedaction = (options: Options) => {
  const keep = options.keepMessages
  const keeps: (entry: Entry) => boolean = keep === undefined || keep === false
    ? () => false
    : keep === true
    ? () => true
    : typeof keep === "function"
    ? keep
    : (entry) => entry.topic !== undefined && keep.includes(entry.topic)
  // Entries carry the same few `detail` keys over and over: each key's verdict is worked out once.
  const verdicts = new Map<string, boolean>()
  const sensitive = (key: string) => {
    let verdict = verdicts.get(key)
    if (verdict === undefined) {
      verdict = Redaction.isSensitive(key)
      if (verdicts.size < 10_000) verdicts.set(key, verdict)
    }
    return verdict
  }
  return (entry: Entry): Entry | undefined => {
    let out = entry
    if (out.message !== undefined && !keeps(out)) {
      const { message: _, ...rest } = out
      out = new Port.Entry(rest, { disableValidation: true })
    }
    if (out.detail !== undefined) {
      let any = false
      for (const key in out.detail) {
        if (sensitive(key)) {
          any = true
          break
        }
      }
      // Copied only when something is removed: most entries have nothing to hide.
      if (any) out = new Port.Entry({ ...out, detail: Redaction.omitSensitive(out.detail) }, { disableValidation: true })
    }
    return options.redact === undefined ? out : options.redact(out)
  }
}

const time = (at: number) => new Date(at).toISOString().replace("T", " ").replace("Z", "")

/** One line of a timeline: time, stage, component and facts; entries of caused events name their event. */
export const renderEntry = (entry: Entry, root: string): string => {
  const facts = [
    entry.topic === undefined ? undefined : `topic=${entry.topic}`,
    entry.outcome === undefined ? undefined : `outcome=${entry.outcome}`,
    entry.attempt === undefined ? undefined : `attempt=${entry.attempt}`,
    entry.durationMs === undefined ? undefined : `duration=${Math.round(entry.durationMs)}ms`,
    entry.category === undefined ? undefined : `category=${entry.category}`,
    ...Object.entries(entry.detail ?? {}).map(([key, value]) => `${key}=${value}`)
  ].filter((fact) => fact !== undefined)
  const who = entry.eventId === root ? "" : `  [caused: ${entry.eventId}]`
  return `${time(entry.at)}  ${entry.stage.padEnd(13)} ${entry.component.padEnd(11)} ${facts.join(" ")}${who}`
}
