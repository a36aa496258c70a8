import * as Contract from "@bulwark/transport/Contract"
import { SqsTransport } from "../src/index.js"
import { credentials, withEmulator } from "./support/PrivateSqs.js"

// Standard queues (`fifo: false`): no per-key order or dedupe declared; the rest of the contract holds.
Contract.suite(
  "amazon sqs standard (fauxqs)",
  withEmulator((emulator) =>
    SqsTransport.layer({ endpoint: emulator.endpoint, clientConfig: { credentials }, visibilityTimeout: "2 seconds", fifo: false })
  ),
  { propertyRuns: 5, subscribeSettle: "300 millis" }
)
