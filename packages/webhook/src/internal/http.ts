// One raw HTTP POST with node:http(s): no redirects are ever followed (node never does), the connection is
// pinned to the address the SSRF guard approved, and only a bounded excerpt of the response is kept.
import * as http from "node:http"
import * as https from "node:https"
import type { LookupFunction } from "node:net"

export interface RawResponse {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly excerpt: string
}

export const post = (
  url: URL,
  headers: Record<string, string>,
  body: Uint8Array,
  pinned: { readonly address: string; readonly family: 4 | 6 },
  excerptBytes: number,
  signal: AbortSignal
): Promise<RawResponse> =>
  new Promise((resolve, reject) => {
    const lookup: LookupFunction = (_hostname, options, callback) => {
      if ((options as { all?: boolean }).all) {
        ;(callback as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [pinned])
      } else callback(null, pinned.address, pinned.family)
    }
    const request = (url.protocol === "https:" ? https : http).request(url, {
      method: "POST",
      headers: { ...headers, "content-length": String(body.length) },
      lookup,
      signal
    }, (response) => {
      const chunks: Array<Buffer> = []
      let kept = 0
      response.on("data", (chunk: Buffer) => {
        if (kept < excerptBytes) {
          const part = chunk.subarray(0, excerptBytes - kept)
          chunks.push(part)
          kept += part.length
        }
      })
      response.on("end", () =>
        resolve({
          status: response.statusCode ?? 0,
          headers: response.headers,
          excerpt: Buffer.concat(chunks).toString("utf8")
        }))
      response.on("error", reject)
    })
    request.on("error", reject)
    request.end(body)
  })
