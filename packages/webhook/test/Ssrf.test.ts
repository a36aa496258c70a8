import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Ssrf from "../src/Ssrf.js"

// [address, refused?, why]
const table: ReadonlyArray<readonly [string, boolean, string]> = [
  // plain IPv4 and IPv6
  ["127.0.0.1", true, "IPv4 loopback"],
  ["169.254.169.254", true, "cloud metadata"],
  ["8.8.8.8", false, "public IPv4"],
  ["0177.0.0.1", true, "octal-looking IPv4 is not an address: fail closed"],
  ["::1", true, "IPv6 loopback"],
  ["0:0:0:0:0:0:0:1", true, "IPv6 loopback, uncompressed"],
  ["::", true, "unspecified"],
  ["2606:4700::1111", false, "public IPv6"],
  ["2606:4700:0000:0000:0000:0000:0000:1111", false, "public IPv6, leading zeros"],
  ["FE80::1", true, "link-local, upper case"],
  ["fe80::1%eth0", true, "link-local with a zone id"],
  ["[fe80::1%25eth0]", true, "link-local, bracketed with an encoded zone id"],
  ["[::1]", true, "loopback in brackets"],
  ["fd00:ec2::254", true, "ULA (AWS IMDS over IPv6)"],
  ["fec0::1", true, "deprecated site-local"],
  // IPv4-compatible (::a.b.c.d)
  ["::127.0.0.1", true, "IPv4-compatible loopback, dotted"],
  ["::7f00:1", true, "IPv4-compatible loopback, hex"],
  ["0000:0000:0000:0000:0000:0000:7F00:0001", true, "IPv4-compatible loopback, uncompressed upper case"],
  ["::a9fe:a9fe", true, "IPv4-compatible metadata address"],
  ["::8.8.8.8", false, "IPv4-compatible public address"],
  // IPv4-mapped (::ffff:a.b.c.d)
  ["::ffff:127.0.0.1", true, "IPv4-mapped loopback, dotted"],
  ["::ffff:7f00:1", true, "IPv4-mapped loopback, hex"],
  ["0:0:0:0:0:FFFF:0A00:0001", true, "IPv4-mapped 10.0.0.1, uncompressed upper case"],
  ["::ffff:a9fe:a9fe", true, "IPv4-mapped metadata address"],
  ["::ffff:8.8.8.8", false, "IPv4-mapped public address"],
  // IPv4-translated (::ffff:0:a.b.c.d)
  ["::ffff:0:127.0.0.1", true, "IPv4-translated loopback"],
  ["::ffff:0:c0a8:101", true, "IPv4-translated 192.168.1.1, hex"],
  ["::ffff:0:8.8.8.8", false, "IPv4-translated public address"],
  // 6to4 (2002::/16)
  ["2002:7f00:1::", true, "6to4 of 127.0.0.1"],
  ["2002:a9fe:a9fe::1", true, "6to4 of the metadata address"],
  ["2002:0a00:0001:0000:0000:0000:0000:0001", true, "6to4 of 10.0.0.1, uncompressed"],
  ["2002:808:808::1", false, "6to4 of a public address"],
  // Teredo (2001:0::/32): server in bits 32–64, client XOR 0xffffffff in the last 32 bits
  ["2001:0:4136:e378:8000:63bf:80ff:fffe", true, "Teredo, client 127.0.0.1"],
  ["2001:0:a00:1::f7f7:f7f7", true, "Teredo, server 10.0.0.1"],
  ["2001:0:4136:e378:8000:63bf:3fff:fdd2", true, "Teredo, client 192.0.2.45 (TEST-NET, RFC 4380 example)"],
  ["2001:0:4136:e378:8000:63bf:f7f7:f7f7", false, "Teredo, server 65.54.227.120 and client 8.8.8.8"],
  // NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48)
  ["64:ff9b::127.0.0.1", true, "NAT64 of loopback"],
  ["64:ff9b::a9fe:a9fe", true, "NAT64 of the metadata address, hex"],
  ["64:ff9b::8.8.8.8", false, "NAT64 of a public address"],
  ["64:ff9b:1::127.0.0.1", true, "local-use NAT64 /96 of loopback"],
  ["64:ff9b:1::8.8.8.8", false, "local-use NAT64 /96 of a public address"],
  ["64:ff9b:1:7f00:0:100::", true, "local-use NAT64 /48 of loopback"],
  ["64:ff9b:1:0:7f:0:100::", true, "local-use NAT64 /64 of loopback"],
  // garbage
  ["::ffff:010.0.0.1", true, "leading zero in the dotted tail: fail closed"],
  ["1::2::3", true, "two '::': not an address"],
  ["::00001", true, "five hex digits: not an address"],
  ["example.com", true, "a name is not an address"]
]

describe("Ssrf", () => {
  it.each(table)("isBlockedAddress(%j) is %s: %s", (address, refused) => {
    expect(Ssrf.isBlockedAddress(address)).toBe(refused)
  })

  const urls: ReadonlyArray<readonly [string, boolean]> = [
    ["http://[::127.0.0.1]/hook", true],
    ["http://[2002:7f00:1::]/hook", true],
    ["http://[0:0:0:0:0:FFFF:7F00:0001]:8080/hook", true],
    ["https://[::ffff:0:127.0.0.1]/", true],
    ["https://[64:ff9b::10.0.0.1]/", true],
    ["https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", true],
    ["https://[0064:FF9B:0000:0000:0000:0000:0808:0808]/", false],
    ["https://[2606:4700::1111]/", false]
  ]
  it.each(urls)("the guard on %s refuses: %s", (url, refused) =>
    Effect.gen(function*() {
      const result = yield* Effect.either(Ssrf.make().resolve(new URL(url)))
      expect(result._tag === "Left" && result.left._tag === "DestinationRefused").toBe(refused)
      if (!refused) expect(result._tag).toBe("Right")
    }).pipe(Effect.runPromise))

  it.effect("an allow-listed IPv4 range admits the IPv6 forms that embed it, and nothing else", () =>
    Effect.gen(function*() {
      const guard = Ssrf.make(["127.0.0.0/8"])
      expect((yield* guard.resolve(new URL("http://[::ffff:127.0.0.1]/")))).toMatchObject({ family: 6 })
      expect((yield* guard.resolve(new URL("http://[2002:7f00:1::]/")))).toMatchObject({ family: 6 })
      const refused = yield* Effect.flip(guard.resolve(new URL("http://[2002:a00:1::]/")))
      expect(refused._tag).toBe("DestinationRefused")
    }))
})
