// Issue 17's fault suite for Google Pub/Sub. The emulator keeps everything in memory (a restart would lose it, as
// the service never does), so the fault is the one a client of the managed service meets: its endpoint resets
// every connection (gRPC streams included) mid-request and refuses new ones for a second, then answers again.
import * as Contract from "@bulwark/transport/Contract"
import * as FaultProxy from "../../transport/test/support/FaultProxy.js"
import { PubSubTransport } from "../src/index.js"
import * as PrivatePubSub from "./support/PrivatePubSub.js"

Contract.faultSuite(
  "google cloud pub/sub (emulator behind a proxy that resets every connection)",
  async () => {
    const emulator = await PrivatePubSub.start()
    return FaultProxy.privateService({ port: emulator.port, url: (port) => `127.0.0.1:${port}`, destroy: emulator.destroy })
  },
  (service) => PubSubTransport.layer({ apiEndpoint: service.url, projectId: "bulwark-fault", visibilityTimeout: "2 seconds" })
)
