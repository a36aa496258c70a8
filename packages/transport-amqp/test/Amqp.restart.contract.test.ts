// Issue 17: the transport fault suite over a private RabbitMQ node, killed (SIGKILL) and restarted mid-stream.
// Publisher confirms come after a persistent message reaches the disk, so a crash loses nothing confirmed.
import * as Contract from "@bulwark/transport/Contract"
import * as AmqpTransport from "../src/AmqpTransport.js"
import * as PrivateRabbit from "./support/PrivateRabbit.js"

Contract.faultSuite(
  "amqp",
  () => PrivateRabbit.start(),
  (rabbit) =>
    AmqpTransport.layer({ url: rabbit.url, visibilityTimeout: "2 seconds", heartbeat: "1 second", connectTimeout: "2 seconds" }),
  // A node boots in seconds, more on a loaded machine.
  { recovery: "60 seconds" }
)
