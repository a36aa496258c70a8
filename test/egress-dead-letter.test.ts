/**
 * Egress exhaustion ends in the dead-letter queue with its attempt history: a notification consumer sends
 * signed webhooks to an endpoint that keeps answering 503; once the sender's schedule is spent, the
 * `deadLetter` middleware stores the envelope (category `dependency`) with every attempt, and the message
 * is acked, not redelivered forever.
 */
import { Envelope } from "@bulwark/core"
import { DeadLetter, MemoryDeadLetterStore } from "@bulwark/dead-letter"
import { Transport } from "@bulwark/transport"
import * as MemoryTransport from "@bulwark/transport/Transport/Memory"
import { Sender, Signing } from "@bulwark/webhook"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, pipe, Schema } from "effect"
import { createServer } from "node:http"

const Notification = Schema.Struct({ orderId: Schema.String, status: Schema.String })

const alwaysUnavailable = Effect.acquireRelease(
  Effect.async<{ readonly url: string; readonly hits: () => number; readonly close: () => void }>((resume) => {
    let hits = 0
    const server = createServer((req, res) => {
      req.resume()
      req.on("end", () => {
        hits++
        res.writeHead(503, { "content-type": "text/plain" })
        res.end("maintenance window")
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      resume(Effect.succeed({
        url: `http://127.0.0.1:${port}/hooks`,
        hits: () => hits,
        close: () => {
          server.closeAllConnections()
          server.close()
        }
      }))
    })
  }),
  (server) => Effect.sync(server.close)
)

describe("webhook egress → dead-letter queue", () => {
  it.live("an exhausted delivery is dead-lettered once, as a dependency failure, with its attempt history", () =>
    Effect.gen(function*() {
      const endpoint = yield* alwaysUnavailable
      const sender = yield* Sender.make({
        schedule: ["0 millis", "5 millis", "5 millis"],
        attemptTimeout: "2 seconds",
        allow: ["127.0.0.1"]
      })
      const store = yield* MemoryDeadLetterStore.make
      const encode = Envelope.encode(Notification)
      const notify = (envelope: Envelope.Envelope<typeof Notification.Type>) =>
        Effect.flatMap(encode(envelope), (body) =>
          sender.send(
            { id: "partner-1", url: endpoint.url, secrets: [Signing.generateSecret()] },
            { id: envelope.id, body, contentType: Envelope.cloudEventsContentType }
          ))
      const handler = pipe(notify, DeadLetter.deadLetter(store, { topic: "notifications", schema: Notification }))

      const inspector = yield* MemoryTransport.MemoryTransportInspector
      const consumer = yield* Effect.fork(Transport.consume("notifications", handler, { schema: Notification }))
      const envelope = yield* Envelope.make({
        type: "order.shipped",
        source: "/shop",
        subject: "order-9",
        data: { orderId: "order-9", status: "shipped" }
      })
      yield* Transport.publishEnvelopes(Notification)("notifications", [envelope])
      while (inspector.pending("notifications") > 0) yield* Effect.sleep("10 millis")
      yield* Fiber.interrupt(consumer)

      expect(endpoint.hits()).toBe(3)
      const entries = yield* store.list()
      expect(entries).toHaveLength(1)
      const [entry] = entries
      expect(entry!.messageId).toBe(envelope.id)
      expect(entry!.category).toBe("dependency")
      expect(entry!.error.tag).toBe("DeliveryExhausted")
      expect(entry!.error.classification).toBe("permanent")
      const history = JSON.parse(entry!.error.fields!) as { attempts: ReadonlyArray<{ outcome: string; status: number; excerpt: string }> }
      expect(history.attempts.map((a) => [a.outcome, a.status])).toEqual([["failed", 503], ["failed", 503], ["failed", 503]])
      expect(history.attempts[0]!.excerpt).toContain("maintenance window")
      // The stored bytes are the CloudEvent a replay republishes.
      const replayed = yield* Envelope.decode(Notification)(entry!.payload)
      expect(replayed.data).toEqual({ orderId: "order-9", status: "shipped" })
    }).pipe(Effect.scoped, Effect.provide(MemoryTransport.layer())))
})
