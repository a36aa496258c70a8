import { Breaker } from "@bulwark/circuit-breaker"
import { Handler } from "@bulwark/core"
import { DeadLetter, Replay } from "@bulwark/dead-letter"
import { Idempotent } from "@bulwark/idempotency"
import { Backoff, Retry } from "@bulwark/retry"
import { Invariant, Simulation, Simulator, type World } from "@bulwark/simulator"
import { Transport } from "@bulwark/transport"
import { Ingress, Verifier } from "@bulwark/webhook"
import { Duration, Effect, pipe, Schema } from "effect"

/** What the simulated provider sends (`ref` names the message in reports). */
const Payment = Schema.Struct({ ref: Schema.String, key: Schema.String, amount: Schema.Number, poison: Schema.Boolean })

/** The real ingress, consumer, drain and replayer, with their ports taken from the world. */
const pipeline = (world: World.World) =>
  Effect.gen(function*() {
    // Standard Webhooks, verified over the raw bytes; persisted before the 202.
    const receive = Ingress.process({
      verifier: Verifier.standard([world.secret], { tolerance: Duration.seconds(30) }),
      schema: Payment,
      topic: "payments",
      type: "payment.received",
      subject: (payment) => payment.key
    })
    const ingress: World.Ingress = (request) => Effect.map(Effect.exit(receive(request)), (exit) => Ingress.answer(exit).status)

    // Each consumer process has its breaker; every attempt is bounded, retried with jitter, idempotent.
    const consumer = Effect.gen(function*() {
      const breaker = yield* Breaker.make("downstream", { window: { kind: "count", size: 10 }, minimumCalls: 4, openDuration: "1 second" })
      const call: Handler.Handler<typeof Payment.Type, World.DownstreamError> = (envelope) =>
        world.callDownstream({
          ref: envelope.data.ref,
          key: envelope.data.key,
          order: world.orderOf("payments", envelope.id),
          idempotencyKey: envelope.id
        })
      const handler = pipe(
        call,
        Handler.timeout("500 millis"),
        Breaker.middleware(breaker),
        Retry.middleware(Retry.policy({ schedule: Backoff.exponential({ base: "100 millis", cap: "1 second" }), maxAttempts: 3 })),
        Idempotent.idempotent({ namespace: "payments:", retention: "1 hour", onInProgress: "nack" })
      )
      return yield* Transport.consume("payments", handler, { schema: Payment, group: "consumer", orderBy: "subject", concurrency: 4, maxAttempts: 5 })
    })

    // Dead letters are stored; those of an outage (not poison) are replayed every 5 s until they go through.
    const replayer = Effect.forever(Effect.zipRight(
      Effect.sleep("5 seconds"),
      Effect.forEach(["dependency", "timeout"] as const, (category) => Effect.ignore(Replay.replay({ filter: { category } })))
    ))

    for (const name of ["consumer-1", "consumer-2"]) yield* world.spawn(name, Effect.provide(consumer, world.layer))
    yield* world.spawn("drain", Effect.provide(DeadLetter.drain("payments"), world.layer))
    yield* world.spawn("replayer", Effect.provide(replayer, world.layer))
    return ingress
  }).pipe(Effect.orDie)

/** `bulwark simulate docs/snippets/simulation.ts --runs 200 --seed 42` checks this export. */
export const simulation = Simulation.make({
  name: "payments (docs)",
  pipeline,
  workload: { maxMessages: 8, maxFaults: 6, faultWindow: 20_000 },
  invariants: Invariant.all
})

/** The same check from a test: `expect(report.valid).toBe(true)`. */
export const report = () => Simulator.check(simulation, { runs: 100, seed: 42 })
