// Issue 17: the transport fault suite over a private NATS JetStream server (file store), stopped and restarted
// mid-stream. A clean stop: NATS 2.9 acknowledges a publish before its store reaches the file, so a SIGKILL
// may lose acknowledged messages (a property of the server, not of the transport).
import * as Contract from "@bulwark/transport/Contract"
import { NatsTransport } from "../src/index.js"
import * as PrivateNats from "./support/PrivateNats.js"

Contract.faultSuite(
  "nats",
  async () => {
    const nats = await PrivateNats.start()
    return { url: nats.url, restart: () => nats.restart({ downMillis: 500 }), destroy: nats.destroy }
  },
  (nats) =>
    NatsTransport.layer({
      servers: nats.url,
      prefix: "fault",
      ackWait: "1 second",
      reconnectTimeWait: "100 millis",
      requestTimeout: "2 seconds",
      pullExpires: "2 seconds",
      batchSize: 32
    })
)
