import * as Contract from "@bulwark/transport/Contract"
import { PubSubTransport } from "../src/index.js"
import { withEmulator } from "./support/PrivatePubSub.js"

// The suite's own emulator, on a spare port, started and stopped with the layer. Pub/Sub's ack deadlines are
// whole seconds: a 2 s visibility timeout is the shortest that leaves the pulls room on a loaded machine.
Contract.suite(
  "google cloud pub/sub (emulator)",
  withEmulator((emulator) =>
    PubSubTransport.layer({ apiEndpoint: emulator.endpoint, projectId: "bulwark-contract", visibilityTimeout: "2 seconds" })
  ),
  { propertyRuns: 6, subscribeSettle: "300 millis" }
)
