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
for (const [network, prefix] of [
  ["::", 128], ["::1", 128], ["64:ff9b::", 96], ["100::", 64], ["2001:db8::", 32], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8]
] as const) blocked.addSubnet(network, prefix, "ipv6")

const mappedDotted = /^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/i
const mappedHex = /^(?:0{0,4}:){0,5}:?ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i

/** The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:7f00:1` → `127.0.0.1`), else the input. */
const unmap = (address: string): string => {
  const dotted = mappedDotted.exec(address)
  if (dotted) return dotted[1]!
  const hex = mappedHex.exec(address)
  if (hex) {
    const high = parseInt(hex[1]!, 16)
    const low = parseInt(hex[2]!, 16)
    return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`
  }
  return address
}

/** Whether an address is in a range the guard refuses by default. */
export const isBlockedAddress = (input: string): boolean => {
  const address = unmap(input)
  const family = isIP(address)
  if (family === 0) return true
  return blocked.check(address, family === 4 ? "ipv4" : "ipv6")
}

/** What may bypass the guard: host names, addresses, or CIDR ranges (`127.0.0.0/8`, `::1/128`). */
export type AllowList = ReadonlyArray<string>

/** A compiled allow-list. */
export interface Guard {
  /** Resolves and checks `url`; answers the address to connect to. */
  readonly resolve: (url: URL) => Effect.Effect<{ readonly address: string; readonly family: 4 | 6 }, DestinationRefused | ResolveFailed>
}

/** Builds a guard; `allow` lists hosts, addresses or CIDR ranges that are accepted even if internal. */
export const make = (allow: AllowList = []): Guard => {
  const allowedNames = new Set<string>()
  const allowedRanges = new BlockList()
  for (const entry of allow) {
    const [network, prefix] = entry.split("/")
    const family = isIP(network ?? "")
    if (family === 0) allowedNames.add(entry.toLowerCase())
    else if (prefix === undefined) allowedRanges.addAddress(network!, family === 4 ? "ipv4" : "ipv6")
    else allowedRanges.addSubnet(network!, Number(prefix), family === 4 ? "ipv4" : "ipv6")
  }
  const isAllowed = (address: string) => {
    const plain = unmap(address)
    const family = isIP(plain)
    return family !== 0 && allowedRanges.check(plain, family === 4 ? "ipv4" : "ipv6")
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
          : yield* Effect.tryPromise({
            try: () => lookup(host, { all: true, verbatim: true }),
            catch: (error) => new ResolveFailed({ host, detail: error instanceof Error ? error.message : String(error) })
          })
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
