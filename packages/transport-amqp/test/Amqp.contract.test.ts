import * as Contract from "@bulwark/transport/Contract"
import { testPrefix, transportWithCleanup } from "./helpers.js"

const prefix = testPrefix("contract")

// A short visibility timeout keeps the crash tests quick: a finished subscription hands back what it holds after 1 s.
Contract.suite("amqp", transportWithCleanup(prefix, { visibilityTimeout: "1 second", heartbeat: "5 seconds" }), {
  topicPrefix: prefix,
  propertyRuns: 10
})
