import * as Contract from "@bulwark/transport/Contract"
import { afterAll } from "vitest"
import { NatsTransport } from "../src/index.js"
import { deleteStreams, natsUrl, uniquePrefix } from "./support.js"

const prefix = uniquePrefix("contract")

afterAll(async () => {
  await deleteStreams(prefix)
})

// A 1 s ack wait keeps the crash and quiet-period tests short; JetStream handles it without trouble.
Contract.suite("nats", NatsTransport.layer({ servers: natsUrl, prefix, ackWait: "1 second" }), {
  propertyRuns: 8,
  subscribeSettle: "300 millis"
})
