import { Effect, Layer } from "effect"
import * as MemoryOutboxStore from "../src/OutboxStore/Memory.js"
import { contract } from "./contract.js"

contract({
  name: "memory (TestClock)",
  layer: Layer.empty,
  virtualTime: true,
  fresh: () => Effect.map(MemoryOutboxStore.make(), (store) => ({ store, transaction: store.transaction }))
})

contract({
  name: "memory (TestClock), partitioned",
  layer: Layer.empty,
  virtualTime: true,
  partitioned: true,
  fresh: () => Effect.map(MemoryOutboxStore.make({ partitioned: true }), (store) => ({ store, transaction: store.transaction }))
})
