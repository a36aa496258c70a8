import * as BreakerStateStore from "../src/BreakerStateStore.js"
import { suite } from "./StoreContract.js"

suite("memory", BreakerStateStore.layerMemory)
