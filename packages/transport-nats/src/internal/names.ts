/**
 * Topic and group names → JetStream stream, subject and durable names.
 *
 * JetStream names may not contain `.`, `*`, `>`, whitespace or path separators, and a subject token may
 * not contain `.`; topics may contain anything. Every byte outside `[A-Za-z0-9-]` is written as `_` and two
 * hex digits (`_` itself included), which is reversible, so two topics never share a stream.
 */

const encoder = new TextEncoder()
// ignoreBOM keeps a leading U+FEFF, which is part of the topic (the default decoder would drop it).
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** Longest stream name we create: JetStream stores a stream in a directory named after it. */
export const maxNameLength = 200

const plain = /^[A-Za-z0-9-]$/
const prefixPattern = /^[A-Za-z0-9-]{1,32}$/

/** Encodes an arbitrary string as a name token valid for streams, subjects and durables. */
export const encodeToken = (value: string): string => {
  let out = ""
  for (const char of value) {
    if (plain.test(char)) {
      out += char
    } else {
      for (const byte of encoder.encode(char)) out += "_" + byte.toString(16).toUpperCase().padStart(2, "0")
    }
  }
  return out
}

/** Reverses {@link encodeToken}; `undefined` when the token was not produced by it. */
export const decodeToken = (token: string): string | undefined => {
  const bytes: Array<number> = []
  for (let i = 0; i < token.length; i++) {
    const char = token[i]!
    if (char === "_") {
      const hex = token.slice(i + 1, i + 3)
      if (!/^[0-9A-F]{2}$/.test(hex)) return undefined
      bytes.push(parseInt(hex, 16))
      i += 2
    } else if (plain.test(char)) {
      bytes.push(char.charCodeAt(0))
    } else {
      return undefined
    }
  }
  try {
    return decoder.decode(new Uint8Array(bytes))
  } catch {
    return undefined
  }
}

/** Whether `prefix` can start stream names and subjects: 1–32 of `[A-Za-z0-9-]` (no `_`, which separates). */
export const isValidPrefix = (prefix: string): boolean => prefixPattern.test(prefix)

/** Where a topic lives in JetStream. */
export interface TopicNames {
  readonly stream: string
  readonly subject: string
}

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** Whether `value` is well-formed UTF-16: a lone surrogate has no UTF-8 encoding and would not round-trip. */
export const isWellFormed = (value: string): boolean => !loneSurrogate.test(value)

/** The stream and subject of `topic`, or why the topic cannot be mapped. */
export const topicNames = (prefix: string, topic: string): TopicNames | string => {
  if (topic.length === 0) return "a topic name must not be empty"
  if (!isWellFormed(topic)) return "a topic name must be well-formed Unicode (it has a lone surrogate)"
  const token = encodeToken(topic)
  const stream = `${prefix}_${token}`
  if (stream.length > maxNameLength) {
    return `topic "${topic.slice(0, 40)}…" is too long: its stream name would exceed ${maxNameLength} characters`
  }
  return { stream, subject: `${prefix}.${token}` }
}

/** The durable consumer name of a group, or why the group cannot be mapped. */
export const durableName = (group: string): { readonly durable: string } | string => {
  if (group.length === 0) return "a group name must not be empty"
  if (!isWellFormed(group)) return "a group name must be well-formed Unicode (it has a lone surrogate)"
  const durable = encodeToken(group)
  if (durable.length > maxNameLength) return `group "${group.slice(0, 40)}…" is too long`
  return { durable }
}
