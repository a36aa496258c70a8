import { Failure } from "@bulwark/core"
import { MemoryDeadLetterStore } from "@bulwark/dead-letter"
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Metric, Option } from "effect"
import * as Metrics from "../src/Metrics.js"
import * as Tracing from "../src/Tracing.js"

const entry = (id: string) => ({
  message: { id, topic: "orders", key: "order-1", payload: new TextEncoder().encode("{}"), headers: {} },
  category: "dependency" as const,
  error: Failure.toRecord(new Error("downstream 503"), Failure.verdict("transient", "dependency")),
  attempts: 3
})

const depth = Effect.map(Metric.value(Metrics.dlqDepth), (state) => state.value)

describe("traced dead-letter store", () => {
  it.effect("bulwark_dlq_depth follows adds, replays and purges", () =>
    Effect.gen(function*() {
      const store = Tracing.traceDeadLetterStore(yield* MemoryDeadLetterStore.make)
      const first = yield* store.add(entry("m-1"))
      yield* store.add(entry("m-2"))
      expect(yield* depth).toBe(2)

      const claimed = yield* store.claimReplay(first.id, "1 minute")
      expect(Option.isSome(claimed)).toBe(true)
      yield* store.markReplayed(first.id)
      expect(yield* depth).toBe(1)

      yield* store.purge(DateTime.unsafeMake(Date.UTC(2100, 0, 1)))
      expect(yield* depth).toBe(0)
    }))
})
