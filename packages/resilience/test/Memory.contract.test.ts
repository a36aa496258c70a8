import { layerMemory } from "../src/RateLimiterStore.js"
import { suite } from "./contract.js"

suite("memory", layerMemory)
