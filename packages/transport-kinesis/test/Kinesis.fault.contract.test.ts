// Issue 17's fault suite for Kinesis. The emulator keeps streams in memory (a restart would lose them, as a real
// stream never does), so the fault is the one a client of the managed service meets: its endpoint resets every
// connection mid-request and refuses new ones for a second, then answers again with its data.
import * as Contract from "@bulwark/transport/Contract"
import { Layer } from "effect"
import * as FaultProxy from "../../transport/test/support/FaultProxy.js"
import { CheckpointStore, KinesisTransport } from "../src/index.js"
import * as PrivateKinesis from "./support/PrivateKinesis.js"

Contract.faultSuite(
  "amazon kinesis (kinesalite behind a proxy that resets every connection)",
  async () => {
    const emulator = await PrivateKinesis.start()
    return FaultProxy.privateService({ port: emulator.port, url: (port) => `http://127.0.0.1:${port}`, destroy: emulator.destroy })
  },
  (service) =>
    KinesisTransport.layer({
      endpoint: service.url,
      clientConfig: { credentials: PrivateKinesis.credentials },
      shardCount: 2,
      visibilityTimeout: "2 seconds",
      pollInterval: "50 millis"
    }).pipe(Layer.provide(CheckpointStore.layerMemory()))
)
