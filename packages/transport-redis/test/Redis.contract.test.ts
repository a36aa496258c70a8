import * as Contract from "@bulwark/transport/Contract"
import { Layer } from "effect"
import { RedisTransport } from "../src/index.js"
import { cleanupLayer, testPrefix, url } from "./helpers.js"

const keyPrefix = testPrefix("contract")

// Every contract test uses its own topics; the run's own key prefix keeps it apart from other runs, and
// all its keys are deleted when the suite ends.
Contract.suite(
  "redis streams",
  Layer.merge(RedisTransport.layer({ url, keyPrefix, visibilityTimeout: "600 millis" }), cleanupLayer(keyPrefix)),
  { propertyRuns: 10, subscribeSettle: "300 millis" }
)
