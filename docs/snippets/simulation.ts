import { Envelope, Failure, Handler, Pipeline } from "@bulwark/core"
import { Invariant, Scheduler, Simulation, Simulator, World } from "@bulwark/simulator"
import { Duration, Effect, Schema } from "effect"

/** What the simulated provider sends (`ref` names the message in reports). */
const Payment = Schema.Struct({ ref: Schema.String, key: Schema.String, amount: Schema.Number, poison: Schema.Boolean })
const Paid = Schema.Struct({ ...Payment.fields, order: Schema.Number })
const encodePaid = Envelope.encode(Paid)

/** Webhook receiver → `payments` topic → consumer calling the downstream through timeout, breaker and retry. */
const pipeline = (world: World.World) =>
  Effect.gen(function*() {
    const decode = Schema.decodeUnknownEither(Schema.parseJson(Payment))
    const sequence = new Map<string, number>() // per-key acceptance order, checked by `order-per-key`
    const ingress: World.Ingress = (request) =>
      Effect.gen(function*() {
        const tolerance = world.history.policy.webhookTolerance
        if (!world.verify(request, world.wallNow(Scheduler.epoch), tolerance)) return 401 // raw bytes, not re-serialised JSON
        const payment = decode(new TextDecoder().decode(request.body))
        if (payment._tag === "Left") return 400
        const order = sequence.get(payment.right.key) ?? 0
        const envelope = yield* Envelope.make({
          type: "payment.received", source: "/provider", subject: payment.right.key, data: { ...payment.right, order }
        })
        const published = yield* Effect.either(Effect.flatMap(encodePaid(envelope), (payload) =>
          world.publisher.publish("payments", [{ id: envelope.id, key: envelope.subject, payload, headers: {} }])))
        if (published._tag === "Left") return 503 // not acknowledged: the provider sends again
        sequence.set(payment.right.key, order + 1)
        return 202
      }).pipe(Effect.orDie)

    const breaker = world.breaker({ failureThreshold: 3, resetTimeout: 1_000, halfOpenProbes: 1 })
    const retry = world.retry({ attempts: 3, base: 100, jitter: true })
    const handler: Handler.Handler<typeof Paid.Type, unknown> = (envelope) =>
      retry((attempt) =>
        breaker(
          world.callDownstream({ ...envelope.data, idempotencyKey: envelope.data.ref, attempt }).pipe(
            Effect.timeoutFail({
              duration: Duration.millis(500),
              onTimeout: () => new Failure.TransientError({ category: "timeout", message: "downstream timed out" })
            })
          )
        ), envelope.data.ref)

    for (let i = 0; i < 2; i++) {
      yield* Effect.forkScoped(
        Pipeline.run(world.subscriber.subscribe("payments"), handler, {
          schema: Paid, orderBy: "subject", concurrency: 4, maxAttempts: 5
        }).pipe(Effect.orDie)
      )
    }
    return ingress
  })

/** `bulwark simulate docs/snippets/simulation.ts --runs 200 --seed 42` checks this export. */
export const simulation = Simulation.make({
  name: "payments (docs)",
  pipeline,
  workload: { maxMessages: 8, maxFaults: 6, faultWindow: 20_000 },
  invariants: Invariant.all
})

/** The same check from a test: `expect(report.valid).toBe(true)`. */
export const report = () => Simulator.check(simulation, { runs: 100, seed: 42 })
