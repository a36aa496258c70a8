import * as Memory from "../src/IdempotencyStore/Memory.js"
import { suite } from "./contract.js"

suite("memory", Memory.layer(), { propertyRuns: 30 })
