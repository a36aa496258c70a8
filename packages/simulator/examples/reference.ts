/** The correct reference pipeline as a simulation module, for `bulwark simulate`. */
import * as Simulation from "../src/Simulation.js"
import { pipeline } from "./pipeline.js"

/** Webhook → consumer (timeout, breaker, retry, idempotency) → downstream, with DLQ drain and replay; every fault kind. */
export const simulation = Simulation.make({
  name: "reference pipeline",
  pipeline: pipeline(),
  policy: { maxDeliveries: 8 }
})
