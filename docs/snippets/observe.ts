import { Observe } from "@bulwark/core"
import { Breaker } from "@bulwark/circuit-breaker"
import { Effect } from "effect"

declare const callCarrier: Effect.Effect<void, { readonly status: number }>

/** An invariant checked as events arrive: a half-open breaker never runs more probes than it permits. */
const probesWithinLimit: Observe.Observer = (event) => {
  if (event.source === "breaker" && event.kind === "probe" && Number(event.attributes.inFlight) > Number(event.attributes.permitted)) {
    console.error(`breaker ${event.attributes.breaker}: ${event.attributes.inFlight} probes in flight`)
  }
}

/** Every event of the work below (and of the fibers it forks) reaches the observer; nothing outside it. */
export const checked = Effect.gen(function*() {
  const breaker = yield* Breaker.make("carrier-api", { permittedProbes: 2 })
  yield* Effect.forEach(Array.from({ length: 20 }), () => Effect.either(breaker.execute(callCarrier)), { concurrency: 5 })
}).pipe(Observe.observe(probesWithinLimit))

/** The same observer for everything a layer's consumers run (an app, a test suite). */
export const observed = Observe.layer(probesWithinLimit)
