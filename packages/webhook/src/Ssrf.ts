/**
 * The SSRF guard of the egress sender: a destination whose host resolves to a loopback, private,
 * shared, link-local (cloud metadata), multicast or otherwise reserved address is refused unless
 * explicitly allow-listed. Every resolved address must pass, and the connection is then pinned to the
 * approved address so a second DNS answer (rebinding) cannot redirect it.
 */
import { Data, Effect, Schema } from "effect"
import { Failure } from "@bulwark/core"
import { lookup } from "node:dns/promises"
import { BlockList, isIP } from "node:net"

/** A destination the guard refused. Permanent: the same URL will be refused again. */
export class DestinationRefused extends Schema.TaggedError<DestinationRefused>()("DestinationRefused", {
  url: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `refused destination ${this.url}: ${this.reason}`
  }
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return Failure.verdict("permanent", "dependency")
  }
}

/** The destination's host could not be resolved (transient: DNS may answer next time). */
export class ResolveFailed extends Data.TaggedError("ResolveFailed")<{
  readonly host: string
  readonly detail: string
}> {
  override get message(): string {
    return `cannot resolve ${this.host}: ${this.detail}`
  }
}

const blocked = new BlockList()
for (const [network, prefix] of [
  ["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
  ["192.0.0.0", 24], ["192.0.2.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["198.51.100.0", 24],
  ["203.0.113.0", 24], ["224.0.0.0", 4], ["240.0.0.0", 4]
] as const) blocked.addSubnet(network, prefix, "ipv4")
// The IPv6 forms that embed an IPv4 address (IPv4-compatible and -mapped, 6to4, Teredo, NAT64) are not
// listed here: the embedded IPv4 address is extracted and judged by the IPv4 ranges above instead.
for (const [network, prefix] of [
  ["::", 128], ["::1", 128], ["100::", 64], ["2001:db8::", 32], ["fc00::", 7], ["fec0::", 10], ["fe80::", 10], ["ff00::", 8]
] as const) blocked.addSubnet(network, prefix, "ipv6")

/** A dotted-quad IPv4 address as a 32-bit number; strict, so `0177.0.0.1` or `127.1` are not addresses here. */
const parseIpv4 = (text: string): number | undefined => {
  const parts = text.split(".")
  if (parts.length !== 4) return undefined
  let value = 0
  for (const part of parts) {
    // No leading zeros: some parsers read them as octal, so their meaning is ambiguous (fail closed).
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(part) || Number(part) > 255) return undefined
    value = value * 256 + Number(part)
  }
  return value
}

/** An IPv6 address as a 128-bit number: any spelling (compressed or not, leading zeros, any case, dotted tail). */
const parseIpv6 = (text: string): bigint | undefined => {
  let groups: Array<number> = []
  const halves = text.split("::")
  if (halves.length > 2) return undefined
  const parseHalf = (half: string, last: boolean): Array<number> | undefined => {
    if (half === "") return []
    const out: Array<number> = []
    const pieces = half.split(":")
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i]!
      if (last && i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIpv4(piece)
        if (v4 === undefined) return undefined
        out.push(v4 >>> 16, v4 & 0xffff)
      } else if (/^[0-9a-f]{1,4}$/.test(piece)) out.push(parseInt(piece, 16))
      else return undefined
    }
    return out
  }
  if (halves.length === 2) {
    const head = parseHalf(halves[0]!, false)
    const tail = parseHalf(halves[1]!, true)
    if (head === undefined || tail === undefined || head.length + tail.length > 7) return undefined
    groups = [...head, ...Array<number>(8 - head.length - tail.length).fill(0), ...tail]
  } else {
    const all = parseHalf(halves[0]!, true)
    if (all === undefined || all.length !== 8) return undefined
    groups = all
  }
  return groups.reduce((acc, group) => (acc << 16n) | BigInt(group), 0n)
}

const bitsOf = (value: bigint, start: number, length: number): number =>
  Number((value >> BigInt(128 - start - length)) & ((1n << BigInt(length)) - 1n))

const dotted = (v4: number): string => `${v4 >>> 24}.${(v4 >>> 16) & 255}.${(v4 >>> 8) & 255}.${v4 & 255}`

const hexGroups = (value: bigint): string =>
  Array.from({ length: 8 }, (_, i) => bitsOf(value, i * 16, 16).toString(16)).join(":")

/**
 * Every IPv4 address an IPv6 address carries, by the well-known embeddings: IPv4-compatible (::/96),
 * IPv4-mapped (::ffff:0:0/96), IPv4-translated (::ffff:0:0:0/96), 6to4 (2002::/16, bits 16–48), Teredo
 * (2001::/32: the server in bits 32–64, the client XOR 0xffffffff in the last 32 bits) and NAT64
 * (64:ff9b::/96; and the local-use 64:ff9b:1::/48, whose RFC 6052 prefix length the operator picks, so
 * every position it allows is taken).
 */
const embeddedIpv4 = (value: bigint): Array<number> => {
  const top = (bits: number): bigint => value >> BigInt(128 - bits)
  if (top(80) === 0n && (bitsOf(value, 80, 16) === 0 || bitsOf(value, 80, 16) === 0xffff)) return [bitsOf(value, 96, 32)]
  if (top(96) === 0xffff0000n) return [bitsOf(value, 96, 32)]
  if (top(16) === 0x2002n) return [bitsOf(value, 16, 32)]
  if (top(32) === 0x20010000n) return [bitsOf(value, 32, 32), (~bitsOf(value, 96, 32)) >>> 0]
  if (top(96) === 0x0064ff9bn << 64n) return [bitsOf(value, 96, 32)]
  if (top(48) === 0x0064ff9b0001n) {
    // RFC 6052 §2.2: bits 64–71 are zero and the suffix after the IPv4 address is zero in every format but
    // /96; the formats this address can be in are those whose zero bits are zero, and every one counts.
    const zero = (start: number, end: number) => bitsOf(value, start, end - start) === 0
    const found = [bitsOf(value, 96, 32)] // /96
    if (zero(64, 72) && zero(104, 128)) found.push(bitsOf(value, 72, 32)) // /64
    if (zero(64, 72) && zero(96, 128)) found.push(bitsOf(value, 56, 8) * 0x1000000 + bitsOf(value, 72, 24)) // /56
    if (zero(64, 72) && zero(88, 128)) found.push(bitsOf(value, 48, 16) * 0x10000 + bitsOf(value, 72, 16)) // /48
    return found
  }
  return []
}

/** An address as the guard sees it: brackets and zone id dropped, lower case. */
const normalize = (input: string): string => {
  let address = input.trim().toLowerCase()
  if (address.startsWith("[") && address.endsWith("]")) address = address.slice(1, -1)
  const zone = address.indexOf("%")
  return zone === -1 ? address : address.slice(0, zone)
}

type Parsed =
  | { readonly family: 4; readonly address: string }
  | { readonly family: 6; readonly address: string; readonly embedded: ReadonlyArray<string> }

const parse = (input: string): Parsed | undefined => {
  const address = normalize(input)
  const v4 = parseIpv4(address)
  if (v4 !== undefined) return { family: 4, address: dotted(v4) }
  const v6 = parseIpv6(address)
  if (v6 === undefined) return undefined
  return { family: 6, address: hexGroups(v6), embedded: embeddedIpv4(v6).map(dotted) }
}

/**
 * Whether an address is in a range the guard refuses by default. IPv6 addresses that embed an IPv4
 * address are refused when the embedded address is; anything that is not an address is refused.
 */
export const isBlockedAddress = (input: string): boolean => {
  const parsed = parse(input)
  if (parsed === undefined) return true
  if (parsed.family === 4) return blocked.check(parsed.address, "ipv4")
  return blocked.check(parsed.address, "ipv6") || parsed.embedded.some((v4) => blocked.check(v4, "ipv4"))
}

/** What may bypass the guard: host names, addresses, or CIDR ranges (`127.0.0.0/8`, `::1/128`). */
export type AllowList = ReadonlyArray<string>

/** A compiled allow-list. */
export interface Guard {
  /** Resolves and checks `url`; answers the address to connect to. */
  readonly resolve: (url: URL) => Effect.Effect<{ readonly address: string; readonly family: 4 | 6 }, DestinationRefused | ResolveFailed>
}

/** How the guard resolves a host name: every address (each is checked). Default: the system resolver. */
export type Resolver = (host: string) => Effect.Effect<ReadonlyArray<{ readonly address: string; readonly family: number }>, ResolveFailed>

const systemResolver: Resolver = (host) =>
  Effect.tryPromise({
    try: () => lookup(host, { all: true, verbatim: true }),
    catch: (error) => new ResolveFailed({ host, detail: error instanceof Error ? error.message : String(error) })
  })

/**
 * Builds a guard; `allow` lists hosts, addresses or CIDR ranges that are accepted even if internal; `resolver`
 * replaces the system resolver (the sender passes its egress's).
 */
export const make = (allow: AllowList = [], resolver: Resolver = systemResolver): Guard => {
  const allowedNames = new Set<string>()
  const allowedRanges = new BlockList()
  for (const entry of allow) {
    const [network, prefix] = entry.split("/")
    const family = isIP(network ?? "")
    if (family === 0) allowedNames.add(entry.toLowerCase())
    else if (prefix === undefined) allowedRanges.addAddress(network!, family === 4 ? "ipv4" : "ipv6")
    else allowedRanges.addSubnet(network!, Number(prefix), family === 4 ? "ipv4" : "ipv6")
  }
  // An allow-listed IPv4 range also admits the IPv6 forms embedding it (`127.0.0.0/8` admits `::ffff:127.0.0.1`).
  const isAllowed = (address: string) => {
    const parsed = parse(address)
    if (parsed === undefined) return false
    if (parsed.family === 4) return allowedRanges.check(parsed.address, "ipv4")
    return allowedRanges.check(parsed.address, "ipv6") ||
      (parsed.embedded.length > 0 && parsed.embedded.every((v4) => !blocked.check(v4, "ipv4") || allowedRanges.check(v4, "ipv4")))
  }
  return {
    resolve: (url) =>
      Effect.gen(function*() {
        const refuse = (reason: string) => new DestinationRefused({ url: url.href, reason })
        if (url.protocol !== "http:" && url.protocol !== "https:") return yield* refuse(`scheme ${url.protocol} is not http(s)`)
        if (url.username !== "" || url.password !== "") return yield* refuse("credentials in the URL are not allowed")
        const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname
        const nameAllowed = allowedNames.has(host.toLowerCase())
        const literal = isIP(host)
        const addresses = literal !== 0
          ? [{ address: host, family: literal }]
          : yield* resolver(host)
        if (addresses.length === 0) return yield* refuse(`${host} has no address`)
        for (const { address } of addresses) {
          if (isBlockedAddress(address) && !nameAllowed && !isAllowed(address)) {
            return yield* refuse(`${host} resolves to ${address}, an internal address (not allow-listed)`)
          }
        }
        const first = addresses[0]!
        return { address: first.address, family: first.family === 6 ? 6 : 4 }
      })
  }
}
