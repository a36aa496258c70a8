import { Envelope, Handler } from "@bulwark/core"
import { Breaker, BreakerStateStore, Registry } from "@bulwark/circuit-breaker"
import * as RedisStore from "@bulwark/circuit-breaker/BreakerStateStore/Redis"
import { Retry } from "@bulwark/retry"
import { Effect, pipe, Schema, Stream } from "effect"

const Shipment = Schema.Struct({ orderId: Schema.String, carrierUrl: Schema.String })

declare const callCarrier: (url: string) => Effect.Effect<void, { readonly status: number }>

const ship: Handler.Handler<typeof Shipment.Type, { readonly status: number }> = (envelope) =>
  callCarrier(envelope.data.carrierUrl)

/** One breaker per carrier host, so one failing carrier does not stop the others. */
export const handler = Effect.gen(function*() {
  const breakers = yield* Registry.make({
    window: { kind: "time", seconds: 30 },
    minimumCalls: 10,
    failureRateThreshold: 0.5,
    openDuration: Breaker.exponentialOpenDuration({ initial: "5 seconds", max: "2 minutes" }),
    permittedProbes: 2
  })
  const hostOf = (envelope: Envelope.Envelope<typeof Shipment.Type>) => new URL(envelope.data.carrierUrl).host
  return pipe(ship, Handler.timeout("2 seconds"), Registry.middleware(breakers, hostOf), Retry.middleware(Retry.policy()))
})

/** One breaker shared by every process through Redis: they trip, probe and close together. */
export const shared = Breaker.makeShared("carrier-api", { window: { kind: "count", size: 50 } })

/** The store, provided where the application is assembled: its connection lives as long as the breakers. */
export const sharedStore = RedisStore.layer({ url: "redis://127.0.0.1:6379" }, { prefix: "shop:breaker:" })

/** Manual control and observation. */
export const operate = Effect.gen(function*() {
  const breaker = yield* Breaker.make("carrier-api")
  yield* Effect.forkScoped(
    Stream.runForEach(breaker.transitions, (t) => Effect.logWarning(`breaker ${t.key}: ${t.from} → ${t.to}`))
  )
  yield* breaker.isolate // force open during a carrier's announced maintenance
  yield* breaker.reset // and close it again afterwards
  return yield* breaker.toJSON // plain data; `initialState` accepts it
})

export const inProcessStore = BreakerStateStore.layerMemory
