import * as Contract from "@bulwark/transport/Contract"
import { SqsTransport } from "../src/index.js"
import { credentials, withEmulator } from "./support/PrivateSqs.js"

// The suite's own emulator, in its own process on a port the OS picked, started and stopped with the layer.
// FIFO queues (the default): per-key order is declared, so the suite checks it.
Contract.suite(
  "amazon sqs fifo (fauxqs)",
  withEmulator((emulator) =>
    SqsTransport.layer({ endpoint: emulator.endpoint, clientConfig: { credentials }, visibilityTimeout: "2 seconds" })
  ),
  { propertyRuns: 5, subscribeSettle: "300 millis" }
)
