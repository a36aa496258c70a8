// The synchronous inner core of verification and signing. It uses node:crypto directly and caches decoded
// keys, because it runs once per request on the hot path; the Effect API wraps it once per call.
import {
  createHmac,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  sign as cryptoSign,
  timingSafeEqual,
  verify as cryptoVerify,
  type KeyObject
} from "node:crypto"
import {
  MalformedHeader,
  MissingHeader,
  NoMatchingSignature,
  TimestampOutOfTolerance,
  UnknownKey,
  UnsupportedVersion,
  type VerificationError
} from "../WebhookError.js"

/** Header values as node and @effect/platform hand them over (lower-case names). */
export type HeaderInput = Readonly<Record<string, string | ReadonlyArray<string> | undefined>>

export const header = (headers: HeaderInput, name: string): string | undefined => {
  let value = headers[name]
  if (value === undefined) {
    // Callers that did not lower-case names (a CLI, a test) still work; the fast path never gets here.
    for (const key in headers) {
      if (key.toLowerCase() === name) {
        value = headers[key]
        break
      }
    }
  }
  if (value === undefined) return undefined
  return typeof value === "string" ? value : value.join(" ")
}

export type DecodedKey =
  // `secret` is the key's bytes: node sets an HMAC up from bytes faster than from a KeyObject.
  | { readonly kind: "hmac"; readonly key: KeyObject; readonly secret: Buffer }
  | { readonly kind: "ed25519-private"; readonly key: KeyObject; readonly publicKey: KeyObject }
  | { readonly kind: "ed25519-public"; readonly key: KeyObject }

const pkcs8Ed25519Prefix = Buffer.from("302e020100300506032b657004220420", "hex")
const spkiEd25519Prefix = Buffer.from("302a300506032b6570032100", "hex")

// The standard base64 alphabet by character code (below 128).
const base64Alphabet = new Uint8Array(128)
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") base64Alphabet[c.charCodeAt(0)] = 1

/**
 * Whether `text` is strict base64: a multiple of 4 characters of the standard alphabet, `=` only as the padding
 * of the last group (`xx==` or `xxx=`). The same set as `/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/`,
 * checked in one loop: every signature of every request is checked.
 */
const isStrictBase64 = (text: string): boolean => {
  const length = text.length
  if (length % 4 !== 0) return false
  let end = length
  if (length > 0 && text.charCodeAt(length - 1) === 0x3d) {
    end--
    if (text.charCodeAt(length - 2) === 0x3d) end--
  }
  for (let i = 0; i < end; i++) {
    const c = text.charCodeAt(i)
    if (c >= 128 || base64Alphabet[c] === 0) return false
  }
  return true
}

/** Decodes strict (padded, standard alphabet) base64, or answers undefined. */
export const decodeBase64 = (text: string): Buffer | undefined =>
  isStrictBase64(text) ? Buffer.from(text, "base64") : undefined

export const importEd25519Private = (seed: Buffer): KeyObject =>
  createPrivateKey({ key: Buffer.concat([pkcs8Ed25519Prefix, seed]), format: "der", type: "pkcs8" })

export const importEd25519Public = (raw: Buffer): KeyObject =>
  createPublicKey({ key: Buffer.concat([spkiEd25519Prefix, raw]), format: "der", type: "spki" })

export const exportEd25519Public = (key: KeyObject): Buffer =>
  (key.export({ format: "der", type: "spki" }) as Buffer).subarray(spkiEd25519Prefix.length)

export const exportEd25519Seed = (key: KeyObject): Buffer =>
  (key.export({ format: "der", type: "pkcs8" }) as Buffer).subarray(pkcs8Ed25519Prefix.length)

const standardCache = new Map<string, DecodedKey | string>()

/**
 * Decodes a Standard Webhooks secret: `whsec_<base64>` (or bare base64) is an HMAC key, `whsk_<base64>` an
 * ed25519 private key (32-byte seed, or libsodium's 64-byte seed‖public), `whpk_<base64>` a public key.
 * Answers the reason as a string when it cannot.
 */
export const decodeStandardKey = (secret: string): DecodedKey | string => {
  const cached = standardCache.get(secret)
  if (cached !== undefined) return cached
  const decoded = decodeStandardKeyUncached(secret)
  // Bounded: a keyring holds a handful of secrets; a flood of distinct bad ones must not grow memory.
  if (standardCache.size > 1024) standardCache.clear()
  standardCache.set(secret, decoded)
  return decoded
}

const decodeStandardKeyUncached = (secret: string): DecodedKey | string => {
  try {
    if (secret.startsWith("whsk_")) {
      const raw = decodeBase64(secret.slice(5))
      if (raw === undefined || (raw.length !== 32 && raw.length !== 64)) return "whsk_ key must be base64 of 32 or 64 bytes"
      const key = importEd25519Private(raw.subarray(0, 32))
      return { kind: "ed25519-private", key, publicKey: createPublicKey(key) }
    }
    if (secret.startsWith("whpk_")) {
      const raw = decodeBase64(secret.slice(5))
      if (raw === undefined || raw.length !== 32) return "whpk_ key must be base64 of 32 bytes"
      return { kind: "ed25519-public", key: importEd25519Public(raw) }
    }
    const body = secret.startsWith("whsec_") ? secret.slice(6) : secret
    const raw = decodeBase64(body)
    if (raw === undefined || raw.length === 0) return "whsec_ secret must be non-empty base64"
    return { kind: "hmac", key: createSecretKey(raw), secret: raw }
  } catch (error) {
    return error instanceof Error ? error.message : String(error)
  }
}

const utf8KeyCache = new Map<string, KeyObject>()

/** Stripe and GitHub use the secret's UTF-8 bytes verbatim as the HMAC key. */
export const utf8Key = (secret: string): KeyObject => {
  let key = utf8KeyCache.get(secret)
  if (key === undefined) {
    if (utf8KeyCache.size > 1024) utf8KeyCache.clear()
    key = createSecretKey(Buffer.from(secret, "utf8"))
    utf8KeyCache.set(secret, key)
  }
  return key
}

const dot = Buffer.from(".")

/** `{id}.{timestamp}.{body}` as one buffer, built once and shared by every key tried. */
export const standardContent = (id: string, timestamp: string, body: Uint8Array): Buffer =>
  Buffer.concat([Buffer.from(id), dot, Buffer.from(timestamp), dot, body])

/** A successful check: which scheme, the webhook id and signed timestamp where the scheme has them. */
export interface Verified {
  readonly scheme: "standard" | "stripe" | "github"
  readonly id: string | undefined
  readonly timestamp: number | undefined
}

const timestampPattern = /^[0-9]{1,15}$/

const checkTimestamp = (
  raw: string,
  headerName: string,
  nowMillis: number,
  toleranceSeconds: number
): number | VerificationError => {
  if (!timestampPattern.test(raw)) return new MalformedHeader({ header: headerName, detail: "timestamp must be unix seconds" })
  const timestamp = Number(raw)
  const now = Math.floor(nowMillis / 1000)
  if (Math.abs(now - timestamp) > toleranceSeconds) {
    return new TimestampOutOfTolerance({ timestamp, now, toleranceSeconds })
  }
  return timestamp
}

/** Verifies a Standard Webhooks request against decoded keys. Never throws. */
export const verifyStandard = (
  source: string,
  keys: ReadonlyArray<DecodedKey>,
  headers: HeaderInput,
  body: Uint8Array,
  nowMillis: number,
  toleranceSeconds: number
): Verified | VerificationError => {
  const id = header(headers, "webhook-id")
  if (id === undefined) return new MissingHeader({ header: "webhook-id" })
  const rawTimestamp = header(headers, "webhook-timestamp")
  if (rawTimestamp === undefined) return new MissingHeader({ header: "webhook-timestamp" })
  const signatureHeader = header(headers, "webhook-signature")
  if (signatureHeader === undefined) return new MissingHeader({ header: "webhook-signature" })
  // An id with a "." would let `{id}.{ts}.{body}` be split differently than it was signed.
  if (id.length === 0 || id.includes(".")) {
    return new MalformedHeader({ header: "webhook-id", detail: "must be non-empty and contain no '.'" })
  }
  const timestamp = checkTimestamp(rawTimestamp, "webhook-timestamp", nowMillis, toleranceSeconds)
  if (typeof timestamp !== "number") return timestamp
  if (keys.length === 0) return new UnknownKey({ source, detail: "no active keys" })

  let content: Buffer | undefined
  let expectedHmacs: Array<Buffer | undefined> | undefined
  let supported = 0
  let wellFormed = 0
  const versions: Array<string> = []
  // The space-separated entries, walked without splitting (usually there is one).
  for (let start = 0; start <= signatureHeader.length;) {
    let stop = signatureHeader.indexOf(" ", start)
    if (stop === -1) stop = signatureHeader.length
    const entry = signatureHeader.slice(start, stop)
    start = stop + 1
    if (entry === "") continue
    const comma = entry.indexOf(",")
    if (comma <= 0) continue
    wellFormed++
    const version = entry.slice(0, comma)
    if (version !== "v1" && version !== "v1a") {
      versions.push(version)
      continue
    }
    const signature = decodeBase64(entry.slice(comma + 1))
    if (signature === undefined) continue
    supported++
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!
      if (version === "v1" && key.kind === "hmac") {
        if (signature.length !== 32) continue
        expectedHmacs ??= new Array(keys.length)
        // Fed in parts: the body is hashed where it lies, not copied into one buffer first.
        const expected = expectedHmacs[i] ??= createHmac("sha256", key.secret).update(`${id}.${rawTimestamp}.`).update(body).digest()
        if (timingSafeEqual(expected, signature)) return { scheme: "standard", id, timestamp }
      } else if (version === "v1a" && key.kind !== "hmac") {
        if (signature.length !== 64) continue
        content ??= standardContent(id, rawTimestamp, body)
        const publicKey = key.kind === "ed25519-private" ? key.publicKey : key.key
        if (cryptoVerify(null, content, publicKey, signature)) return { scheme: "standard", id, timestamp }
      }
    }
  }
  if (wellFormed === 0) return new MalformedHeader({ header: "webhook-signature", detail: "expected \"<version>,<base64>\" entries" })
  if (supported === 0) {
    return versions.length > 0
      ? new UnsupportedVersion({ versions })
      : new MalformedHeader({ header: "webhook-signature", detail: "signature is not valid base64" })
  }
  return new NoMatchingSignature({ signatures: supported, keys: keys.length })
}

/** Signs `{id}.{timestamp}.{body}` with every key; answers the `webhook-signature` value. */
export const signStandard = (keys: ReadonlyArray<DecodedKey>, id: string, timestamp: number, body: Uint8Array): string => {
  const content = standardContent(id, String(timestamp), body)
  const parts: Array<string> = []
  for (const key of keys) {
    if (key.kind === "hmac") parts.push(`v1,${createHmac("sha256", key.secret).update(content).digest("base64")}`)
    else if (key.kind === "ed25519-private") parts.push(`v1a,${cryptoSign(null, content, key.key).toString("base64")}`)
  }
  return parts.join(" ")
}

const hexPattern = /^[0-9a-f]{64}$/

/** Verifies Stripe's `Stripe-Signature: t=…,v1=…[,v1=…]` over `{t}.{body}`. Never throws. */
export const verifyStripe = (
  source: string,
  secrets: ReadonlyArray<string>,
  headers: HeaderInput,
  body: Uint8Array,
  nowMillis: number,
  toleranceSeconds: number
): Verified | VerificationError => {
  const value = header(headers, "stripe-signature")
  if (value === undefined) return new MissingHeader({ header: "stripe-signature" })
  let rawTimestamp: string | undefined
  const signatures: Array<Buffer> = []
  const versions: Array<string> = []
  for (const item of value.split(",")) {
    const eq = item.indexOf("=")
    if (eq <= 0) continue
    const name = item.slice(0, eq).trim()
    const v = item.slice(eq + 1).trim()
    if (name === "t") rawTimestamp = v
    else if (name === "v1") {
      if (hexPattern.test(v)) signatures.push(Buffer.from(v, "hex"))
    } else versions.push(name)
  }
  if (rawTimestamp === undefined) return new MalformedHeader({ header: "stripe-signature", detail: "no t= timestamp" })
  const timestamp = checkTimestamp(rawTimestamp, "stripe-signature", nowMillis, toleranceSeconds)
  if (typeof timestamp !== "number") return timestamp
  if (signatures.length === 0) {
    return versions.length > 0
      ? new UnsupportedVersion({ versions })
      : new MalformedHeader({ header: "stripe-signature", detail: "no v1= signature of 64 hex digits" })
  }
  if (secrets.length === 0) return new UnknownKey({ source, detail: "no active keys" })
  const content = Buffer.concat([Buffer.from(rawTimestamp), dot, body])
  for (const secret of secrets) {
    const expected = createHmac("sha256", utf8Key(secret)).update(content).digest()
    for (const signature of signatures) {
      if (timingSafeEqual(expected, signature)) return { scheme: "stripe", id: undefined, timestamp }
    }
  }
  return new NoMatchingSignature({ signatures: signatures.length, keys: secrets.length })
}

/** Builds a `Stripe-Signature` value signed with every secret. */
export const signStripe = (secrets: ReadonlyArray<string>, timestamp: number, body: Uint8Array): string => {
  const content = Buffer.concat([Buffer.from(String(timestamp)), dot, body])
  return [`t=${timestamp}`, ...secrets.map((s) => `v1=${createHmac("sha256", utf8Key(s)).update(content).digest("hex")}`)].join(",")
}

/**
 * Verifies GitHub's `X-Hub-Signature-256: sha256=<hex>` over the body, as GitHub documents it: only the
 * secret, the raw body and that header take part. The id is `X-GitHub-Delivery` when the request has one
 * (it is not signed, so it is reported, never required).
 */
export const verifyGithub = (
  source: string,
  secrets: ReadonlyArray<string>,
  headers: HeaderInput,
  body: Uint8Array
): Verified | VerificationError => {
  const value = header(headers, "x-hub-signature-256")
  if (value === undefined) return new MissingHeader({ header: "x-hub-signature-256" })
  const delivery = header(headers, "x-github-delivery")
  const id = delivery === undefined || delivery === "" ? undefined : delivery
  const eq = value.indexOf("=")
  if (eq <= 0) return new MalformedHeader({ header: "x-hub-signature-256", detail: "expected sha256=<hex>" })
  const algorithm = value.slice(0, eq)
  if (algorithm !== "sha256") return new UnsupportedVersion({ versions: [algorithm] })
  const hex = value.slice(eq + 1)
  if (!hexPattern.test(hex)) return new MalformedHeader({ header: "x-hub-signature-256", detail: "expected 64 hex digits" })
  if (secrets.length === 0) return new UnknownKey({ source, detail: "no active keys" })
  const signature = Buffer.from(hex, "hex")
  for (const secret of secrets) {
    const expected = createHmac("sha256", utf8Key(secret)).update(body).digest()
    if (timingSafeEqual(expected, signature)) return { scheme: "github", id, timestamp: undefined }
  }
  return new NoMatchingSignature({ signatures: 1, keys: secrets.length })
}

/** Builds an `X-Hub-Signature-256` value. */
export const signGithub = (secret: string, body: Uint8Array): string =>
  `sha256=${createHmac("sha256", utf8Key(secret)).update(body).digest("hex")}`
