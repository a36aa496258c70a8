import * as Contract from "@bulwark/transport/Contract"
import { Layer } from "effect"
import { CheckpointStore, KinesisTransport } from "../src/index.js"
import { credentials, withEmulator } from "./support/PrivateKinesis.js"

// The suite's own kinesalite, on a spare port, started and stopped with the layer. Two shards per stream, so
// keys spread over shards and a group's reader holds several leases.
Contract.suite(
  "amazon kinesis (kinesalite)",
  withEmulator((emulator) =>
    KinesisTransport.layer({
      endpoint: emulator.endpoint,
      clientConfig: { credentials },
      shardCount: 2,
      visibilityTimeout: "2 seconds",
      pollInterval: "50 millis"
    }).pipe(Layer.provide(CheckpointStore.layerMemory()))
  ),
  { propertyRuns: 6, subscribeSettle: "300 millis" }
)
