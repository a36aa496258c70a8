// Issue 17's fault suite for SQS, standard and FIFO queues. The emulator keeps queues in memory (a restart would
// lose them, as SQS never does), so the fault is the one a client of the managed service meets: its endpoint
// resets every connection mid-request and refuses new ones for a second, then answers again with its data.
import * as Contract from "@bulwark/transport/Contract"
import * as FaultProxy from "../../transport/test/support/FaultProxy.js"
import { SqsTransport } from "../src/index.js"
import * as PrivateSqs from "./support/PrivateSqs.js"

const start = async () => {
  const emulator = await PrivateSqs.start()
  return FaultProxy.privateService({ port: emulator.port, url: (port) => `http://127.0.0.1:${port}`, destroy: emulator.destroy })
}

for (const fifo of [false, true]) {
  Contract.faultSuite(
    `amazon sqs ${fifo ? "fifo" : "standard"} (fauxqs behind a proxy that resets every connection)`,
    start,
    (service) =>
      SqsTransport.layer({
        endpoint: service.url,
        clientConfig: { credentials: PrivateSqs.credentials },
        visibilityTimeout: "2 seconds",
        fifo
      })
  )
}
