/** The correct reference pipeline as a simulation module, for `bulwark simulate`. */
import * as Simulation from "../src/Simulation.js"
import { pipeline } from "./pipeline.js"

/** Webhook → idempotent ledger + outbox → relay → consumer → downstream, every fault kind enabled. */
export const simulation = Simulation.make({
  name: "reference pipeline",
  pipeline: pipeline(),
  policy: { maxDeliveries: 8 }
})
