/**
 * The polled source beside the webhook ingress: a bank that sends no webhooks and only exposes
 * `GET /payments?since=<ISO time>&limit=n`, listing its incoming transfers (oldest change first). The bank
 * books transfers while the run goes on, settles some of them later (a new version of the same transfer),
 * and stamps some changes a little in the past, as a database committing late would.
 *
 * A poller (`@bulwark/poll`) reads it and publishes every transfer version through the outbox (the cursor
 * commits with the rows); the `bank-transfers` consumer records each version it receives.
 */
import type { Envelope } from "@bulwark/core"
import { Poller, Source } from "@bulwark/poll"
import { Transport } from "@bulwark/transport"
import { Effect, Schema } from "effect"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { update } from "./Tally.js"

/** Where polled transfers are published. */
export const bankTransfersTopic = "bank-transfers"

/** A transfer as the bank lists it. */
export const Transfer = Schema.Struct({
  id: Schema.String,
  amountCents: Schema.Number,
  status: Schema.Literal("pending", "settled"),
  changedAt: Schema.String
})
export type Transfer = typeof Transfer.Type

/** The bank's listing API, changing while it runs. */
export interface Bank {
  readonly url: string
  /** Every version the bank ever listed, as `<id>@<epoch millis>`. */
  readonly versions: ReadonlySet<string>
  /** The current version of every transfer. */
  readonly current: () => ReadonlyArray<string>
  /** Stops booking and settling (the listing stays up). */
  readonly stop: Effect.Effect<void>
}

/** Serves the bank for the scope's lifetime, booking `total` transfers one every `everyMillis`. */
export const serveBank = (options: { readonly total: number; readonly everyMillis: number }) =>
  Effect.acquireRelease(
    Effect.async<Bank & { readonly close: () => void }>((resume) => {
      const transfers = new Map<string, Transfer>()
      const versions = new Set<string>()
      let booked = 0
      let tick = 0
      const put = (transfer: Transfer) => {
        transfers.set(transfer.id, transfer)
        versions.add(`${transfer.id}@${Date.parse(transfer.changedAt)}`)
      }
      const timer = setInterval(() => {
        tick++
        // Late commits: some changes are stamped up to 150 ms in the past.
        const at = Date.now() - (tick % 3 === 0 ? 150 : 0)
        if (booked < options.total) {
          put({ id: `tr-${String(booked++).padStart(4, "0")}`, amountCents: 1000 + tick, status: "pending", changedAt: new Date(at).toISOString() })
        }
        if (tick % 2 === 0) {
          const pending = [...transfers.values()].find((t) => t.status === "pending")
          if (pending !== undefined) {
            const changed = Math.max(at, Date.parse(pending.changedAt) + 1)
            put({ ...pending, status: "settled", changedAt: new Date(changed).toISOString() })
          }
        }
      }, options.everyMillis)
      const server = createServer((req, res) => {
        const url = new URL(req.url ?? "/", "http://bank")
        if (req.method !== "GET" || url.pathname !== "/payments") {
          res.writeHead(404).end()
          return
        }
        const since = url.searchParams.get("since")
        const from = since === null ? Number.NEGATIVE_INFINITY : Date.parse(since)
        const limit = Math.min(500, Number(url.searchParams.get("limit") ?? "100"))
        const items = [...transfers.values()]
          .filter((t) => Date.parse(t.changedAt) >= from)
          .sort((a, b) => Date.parse(a.changedAt) - Date.parse(b.changedAt))
          .slice(0, limit)
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ items }))
      })
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({
          url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
          versions,
          current: () => [...transfers.values()].map((t) => `${t.id}@${Date.parse(t.changedAt)}`),
          stop: Effect.sync(() => clearInterval(timer)),
          close: () => {
            clearInterval(timer)
            server.closeAllConnections()
            server.close()
          }
        })))
    }),
    (bank) => Effect.sync(() => bank.close())
  )

/** The poller of the bank's listing (needs the outbox and the cursor store). */
export const pollBank = (bank: Bank) =>
  Poller.run({
    name: "bank",
    topic: bankTransfersTopic,
    type: "com.example.bank.transfer.changed",
    source: "https://bank.example/payments",
    schema: Transfer,
    interval: "100 millis",
    lease: "10 seconds",
    fetch: Source.since({
      url: `${bank.url}/payments`,
      schema: Transfer,
      key: (t) => t.id,
      time: (t) => Date.parse(t.changedAt),
      overlap: "1 second",
      limit: 50
    })
  })

/** Records each transfer version received (by envelope id, `bank:<id>@<time>`). */
export const consumeTransfers = Transport.consume(
  bankTransfersTopic,
  (envelope: Envelope.Envelope<Transfer>) =>
    update((c) => c.transfersReceived.set(envelope.id, (c.transfersReceived.get(envelope.id) ?? 0) + 1)),
  { schema: Transfer, group: "ledger" }
)
