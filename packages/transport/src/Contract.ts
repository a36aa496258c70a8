/**
 * The transport contract suite: every driver runs it (Watermill's `TestPubSub` idea) with the features it
 * declares. Import it from a driver's test file:
 *
 * ```ts
 * import { Contract } from "@bulwark/transport"
 * Contract.suite("memory", Memory.layer({ visibilityTimeout: "300 millis" }))
 * ```
 *
 * Every test uses its own topics, so a suite can run against a shared broker.
 */
import { Delivery, Failure } from "@bulwark/core"
import { expect, layer } from "@effect/vitest"
import {
  Cause,
  Chunk,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FastCheck as fc,
  Layer,
  Logger,
  LogLevel,
  Option,
  Ref,
  Schedule,
  type Scope,
  Stream
} from "effect"
import net from "node:net"
import { inspect } from "node:util"
import { Publisher, Subscriber, type OutgoingMessage } from "./Transport.js"

/** Knobs for running the suite against a driver. */
export interface SuiteOptions {
  /** Runs of the lost-message property test. Default 15. */
  readonly propertyRuns?: number
  /** Per-test timeout in ms. Default 60 000. */
  readonly testTimeout?: number
  /** How long a fresh subscription needs before it receives (broker-side consumer set-up). Default 200 ms. */
  readonly subscribeSettle?: Duration.DurationInput
  /** How long to watch for an unwanted redelivery. Default visibility timeout + 300 ms. */
  readonly quietPeriod?: Duration.DurationInput
  /** Topic name prefix; lets several runs share a broker. Default `bulwark-contract`. */
  readonly topicPrefix?: string
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

let topicCounter = 0
const uniqueTopic = (prefix: string, label: string) =>
  `${prefix}-${label}-${Date.now().toString(36)}-${(topicCounter++).toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`

const message = (id: string, key = "", headers: Record<string, string> = {}): OutgoingMessage => ({
  id,
  key,
  payload: encoder.encode(JSON.stringify({ id })),
  headers
})

const reason = (category: Failure.Category, attempts = 1) =>
  new Delivery.DeadLetterReason({
    category,
    attempts,
    error: new Failure.FailureRecord({
      tag: "ContractError",
      message: "rejected by the contract suite",
      classification: "permanent",
      category
    })
  })

/** Takes `n` deliveries from a stream or fails after `within`. */
const takeN = <E>(stream: Stream.Stream<Delivery.Delivery, E>, n: number, within: Duration.DurationInput) =>
  Stream.take(stream, n).pipe(
    Stream.runCollect,
    Effect.map(Chunk.toReadonlyArray),
    Effect.timeoutFail({ duration: within, onTimeout: () => new Error(`expected ${n} deliveries within ${Duration.format(Duration.decode(within))}`) })
  )

/** Whether anything arrives on the stream within `period`. */
const nothingWithin = <E>(stream: Stream.Stream<Delivery.Delivery, E>, period: Duration.DurationInput) =>
  Stream.runHead(stream).pipe(
    Effect.timeout(period),
    Effect.map(() => false),
    Effect.catchTag("TimeoutException", () => Effect.succeed(true))
  )

/** Runs the transport contract suite against a driver layer. */
export const suite = <E>(
  name: string,
  transport: Layer.Layer<Publisher | Subscriber, E>,
  options: SuiteOptions = {}
): void => {
  const timeout = options.testTimeout ?? 60_000
  const prefix = options.topicPrefix ?? "bulwark-contract"
  const settle = Duration.decode(options.subscribeSettle ?? "200 millis")
  layer(transport, { excludeTestServices: true, timeout: "60 seconds" })(`transport contract: ${name}`, (it) => {
    const features = Effect.map(Subscriber, (s) => s.features)
    const quiet = Effect.map(features, (f) =>
      options.quietPeriod ? Duration.decode(options.quietPeriod) : Duration.sum(f.visibilityTimeout, Duration.millis(300)))
    const within = Effect.map(features, (f) => Duration.sum(Duration.times(f.visibilityTimeout, 2), Duration.seconds(10)))

    it.scoped("delivers what was published before the first subscriber, intact", () =>
      Effect.gen(function*() {
        const publisher = yield* Publisher
        const subscriber = yield* Subscriber
        const topic = uniqueTopic(prefix, "roundtrip")
        const sent = [
          message("m-1", "k-1", { "correlation-id": "c-1", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" }),
          message("m-2", "k-2"),
          { id: "m-3", key: "", payload: new Uint8Array([0, 255, 1, 128]), headers: { "x-binary": "yes" } }
        ]
        yield* publisher.publish(topic, sent)
        const got = yield* takeN(subscriber.subscribe(topic), 3, yield* within)
        yield* Effect.forEach(got, (d) => d.ack)
        const byId = new Map(got.map((d) => [d.message.id, d]))
        expect([...byId.keys()].sort()).toEqual(["m-1", "m-2", "m-3"])
        for (const original of sent) {
          const delivered = byId.get(original.id)!
          expect(delivered.message.topic).toBe(topic)
          expect(delivered.message.key).toBe(original.key)
          expect([...delivered.message.payload]).toEqual([...original.payload])
          for (const [header, value] of Object.entries(original.headers)) {
            expect(delivered.message.headers[header]).toBe(value)
          }
          expect(delivered.attempt).toBe(1)
        }
      }), timeout)

    it.scoped("an acked message is not delivered again", () =>
      Effect.gen(function*() {
        const publisher = yield* Publisher
        const subscriber = yield* Subscriber
        const topic = uniqueTopic(prefix, "ack")
        yield* publisher.publish(topic, [message("a-1"), message("a-2")])
        const stream = subscriber.subscribe(topic)
        const got = yield* takeN(stream, 2, yield* within)
        yield* Effect.forEach(got, (d) => d.ack)
        expect(yield* nothingWithin(stream, yield* quiet)).toBe(true)
      }), timeout)

    it.scoped("a nacked message is delivered again with a higher attempt", () =>
      Effect.gen(function*() {
        const publisher = yield* Publisher
        const subscriber = yield* Subscriber
        const topic = uniqueTopic(prefix, "nack")
        yield* publisher.publish(topic, [message("n-1")])
        const stream = subscriber.subscribe(topic)
        const [first] = yield* takeN(stream, 1, yield* within)
        yield* first!.nack()
        const [second] = yield* takeN(stream, 1, yield* within)
        expect(second!.message.id).toBe("n-1")
        expect(second!.attempt).toBeGreaterThan(first!.attempt)
        yield* second!.ack
      }), timeout)

    it.scoped("a delayed nack is not redelivered before its delay", () =>
      Effect.gen(function*() {
        const f = yield* features
        if (!f.delayedNack) return
        const publisher = yield* Publisher
        const subscriber = yield* Subscriber
        const topic = uniqueTopic(prefix, "delay")
        yield* publisher.publish(topic, [message("d-1")])
        const stream = subscriber.subscribe(topic)
        const [first] = yield* takeN(stream, 1, yield* within)
        const start = Date.now()
        yield* first!.nack({ delay: "1 second" })
        const [second] = yield* takeN(stream, 1, yield* within)
        // Brokers round delays to their own timer granularity; 900 ms leaves room for that.
        expect(Date.now() - start).toBeGreaterThanOrEqual(900)
        expect(second!.message.id).toBe("d-1")
        yield* second!.ack
      }), timeout)

    it.scoped("a consumer that dies holding a delivery does not lose it: it comes back after the visibility timeout", () =>
      Effect.gen(function*() {
        const publisher = yield* Publisher
        const subscriber = yield* Subscriber
        const topic = uniqueTopic(prefix, "crash")
        yield* publisher.publish(topic, [message("v-1")])
        const holding = yield* Deferred.make<Delivery.Delivery>()
        const doomed = yield* subscriber.subscribe(topic).pipe(
          Stream.runForEach((d) => Effect.zipRight(Deferred.succeed(holding, d), Effect.never)),
          Effect.fork
        )
        const held = yield* Deferred.await(holding).pipe(Effect.timeout(yield* within))
        expect(held.message.id).toBe("v-1")
        yield* Fiber.interrupt(doomed)
        const [again] = yield* takeN(subscriber.subscribe(topic), 1, yield* within)
        expect(again!.message.id).toBe("v-1")
        expect(again!.attempt).toBeGreaterThanOrEqual(2)
        yield* again!.ack
      }), timeout)

    it.scoped("dead-lettering moves the message, with its reason, to the dead-letter topic", () =>
      Effect.gen(function*() {
        const f = yield* features
        if (!f.deadLetterTopic) return
        const publisher = yield* Publisher
        const subscriber = yield* Subscriber
        const topic = uniqueTopic(prefix, "dlq")
        yield* publisher.publish(topic, [message("x-1", "key-x", { "correlation-id": "corr-x" })])
        const stream = subscriber.subscribe(topic)
        const [first] = yield* takeN(stream, 1, yield* within)
        yield* first!.deadLetter(reason("schema", first!.attempt))
        const [dead] = yield* takeN(subscriber.subscribe(Delivery.deadLetterTopic(topic)), 1, yield* within)
        expect(dead!.message.id).toBe("x-1")
        expect(decoder.decode(dead!.message.payload)).toBe(JSON.stringify({ id: "x-1" }))
        expect(dead!.message.headers["correlation-id"]).toBe("corr-x")
        expect(dead!.message.headers[Delivery.DeadLetterHeaders.originTopic]).toBe(topic)
        const read = Delivery.readDeadLetterReason(dead!.message.headers)
        expect(read?.category).toBe("schema")
        expect(read?.error.tag).toBe("ContractError")
        yield* dead!.ack
        expect(yield* nothingWithin(stream, yield* quiet)).toBe(true)
      }), timeout)

    it.scoped("a declared dedupe window: the same id published twice within it is delivered once", () =>
      Effect.gen(function*() {
        const f = yield* features
        if (f.dedupeWindow === undefined) return
        const publisher = yield* Publisher
        const subscriber = yield* Subscriber
        const topic = uniqueTopic(prefix, "dedupe")
        yield* publisher.publish(topic, [message("u-1", "k")])
        // Again, alone and in a batch with a new id: only the new one is stored.
        yield* publisher.publish(topic, [message("u-1", "k")])
        // u-2 under a key of its own: a driver whose per-key order holds a key's next message until the
        // previous one is acked (SQS FIFO message groups) must still hand over both before either is acked.
        yield* publisher.publish(topic, [message("u-1", "k"), message("u-2", "k2")])
        const stream = subscriber.subscribe(topic)
        const got = yield* takeN(stream, 2, yield* within)
        yield* Effect.forEach(got, (d) => d.ack)
        expect(got.map((d) => d.message.id).sort()).toEqual(["u-1", "u-2"])
        expect(yield* nothingWithin(stream, yield* quiet)).toBe(true)
      }), timeout)

    it.scoped("per-key order: a key's next message waits for the previous one, other keys do not", () =>
      Effect.gen(function*() {
        const f = yield* features
        if (!f.orderedPerKey) return
        const publisher = yield* Publisher
        const subscriber = yield* Subscriber
        const topic = uniqueTopic(prefix, "order")
        yield* publisher.publish(topic, [message("a1", "A"), message("a2", "A"), message("b1", "B"), message("a3", "A")])
        const stream = subscriber.subscribe(topic)
        const firstTwo = yield* takeN(stream, 2, yield* within)
        expect(firstTwo.map((d) => d.message.id).sort()).toEqual(["a1", "b1"])
        const a1 = firstTwo.find((d) => d.message.id === "a1")!
        yield* a1.nack()
        const [again] = yield* takeN(stream, 1, yield* within)
        expect(again!.message.id).toBe("a1")
        yield* again!.ack
        const [a2] = yield* takeN(stream, 1, yield* within)
        expect(a2!.message.id).toBe("a2")
        yield* a2!.ack
        const [a3] = yield* takeN(stream, 1, yield* within)
        expect(a3!.message.id).toBe("a3")
        yield* a3!.ack
        yield* firstTwo.find((d) => d.message.id === "b1")!.ack
      }), timeout)

    it.scoped("concurrent consumers of one group share the work without losing any of it", () =>
      Effect.gen(function*() {
        const publisher = yield* Publisher
        const subscriber = yield* Subscriber
        const topic = uniqueTopic(prefix, "compete")
        const count = 40
        yield* publisher.publish(topic, Array.from({ length: count }, (_, i) => message(`c-${i}`, `k-${i % 7}`)))
        const seen = yield* Ref.make(new Map<string, number>())
        const done = yield* Deferred.make<void>()
        const consumer = (label: number) =>
          subscriber.subscribe(topic).pipe(
            Stream.runForEach((d) =>
              Effect.gen(function*() {
                yield* Effect.sleep(Duration.millis(2 + label))
                yield* d.ack
                const size = yield* Ref.modify(seen, (m) => {
                  const next = new Map(m)
                  next.set(d.message.id, (next.get(d.message.id) ?? 0) + 1)
                  return [next.size, next]
                })
                if (size === count) yield* Deferred.succeed(done, undefined)
              })
            ),
            Effect.fork
          )
        yield* consumer(0)
        yield* consumer(1)
        yield* consumer(2)
        yield* Deferred.await(done).pipe(Effect.timeout(yield* within))
        const final = yield* Ref.get(seen)
        expect(final.size).toBe(count)
      }), timeout)

    it.scoped("each consumer group receives every message", () =>
      Effect.gen(function*() {
        const f = yield* features
        if (!f.consumerGroups) return
        const publisher = yield* Publisher
        const subscriber = yield* Subscriber
        const topic = uniqueTopic(prefix, "groups")
        const one = yield* Effect.fork(takeN(subscriber.subscribe(topic, { group: "one" }), 5, yield* within))
        const two = yield* Effect.fork(takeN(subscriber.subscribe(topic, { group: "two" }), 5, yield* within))
        yield* Effect.sleep(settle)
        yield* publisher.publish(topic, Array.from({ length: 5 }, (_, i) => message(`g-${i}`)))
        const fromOne = yield* Fiber.join(one)
        const fromTwo = yield* Fiber.join(two)
        yield* Effect.forEach([...fromOne, ...fromTwo], (d) => d.ack)
        expect(fromOne.map((d) => d.message.id).sort()).toEqual(fromTwo.map((d) => d.message.id).sort())
        expect(fromOne.length).toBe(5)
      }), timeout)

    it.scoped.prop(
      "property: whatever consumers do (ack, nack, delayed nack, crash), no message is lost",
      {
        fates: fc.array(
          fc.array(fc.constantFrom("nack", "delay", "crash", "dead-letter-never"), { maxLength: 2 }).map((fates) =>
            fates.filter((fate) => fate !== "dead-letter-never") as Array<"nack" | "delay" | "crash">
          ),
          { minLength: 1, maxLength: 6 }
        )
      },
      ({ fates }) =>
        Effect.gen(function*() {
          const publisher = yield* Publisher
          const subscriber = yield* Subscriber
          const f = yield* features
          const topic = uniqueTopic(prefix, "prop")
          yield* publisher.publish(topic, fates.map((_, i) => message(`p-${i}`, `k-${i % 3}`)))
          const acked = yield* Ref.make(new Set<string>())
          const seenAttempts = new Map<string, number>()
          // Each message follows its fate script, one step per delivery, then is acked.
          const consumeUntilCrash = subscriber.subscribe(topic).pipe(
            Stream.mapEffect((d) =>
              Effect.gen(function*() {
                const index = Number(d.message.id.slice(2))
                const step = seenAttempts.get(d.message.id) ?? 0
                seenAttempts.set(d.message.id, step + 1)
                const fate = fates[index]![step]
                if (fate === "crash") return "crash" as const
                if (fate === "nack") yield* d.nack()
                else if (fate === "delay") yield* d.nack({ delay: f.delayedNack ? "200 millis" : 0 })
                else {
                  yield* d.ack
                  const size = yield* Ref.modify(acked, (s) => {
                    const next = new Set(s).add(d.message.id)
                    return [next.size, next]
                  })
                  if (size === fates.length) return "done" as const
                }
                return "continue" as const
              })
            ),
            Stream.takeUntil((result) => result !== "continue"),
            Stream.runDrain
          )
          const deadline = Date.now() + Duration.toMillis(yield* within) * 2
          while ((yield* Ref.get(acked)).size < fates.length && Date.now() < deadline) {
            // A crash ends this consumer with a delivery unsettled; the next consumer must see it again.
            yield* consumeUntilCrash.pipe(
              Effect.timeout(Duration.sum(f.visibilityTimeout, Duration.seconds(2))),
              Effect.ignore
            )
          }
          expect([...(yield* Ref.get(acked))].sort()).toEqual(fates.map((_, i) => `p-${i}`).sort())
        }),
      { timeout: timeout * 4, fastCheck: { numRuns: options.propertyRuns ?? 15 } }
    )
  })
}

/**
 * A private instance of a driver's service (broker or database) that fault tests may restart: started on a
 * spare port with its own store, never a shared one, and stopped by its pid in `destroy`.
 */
export interface PrivateService {
  /** Where a transport connects to it. */
  readonly url: string
  /** Stops the service (as a crash or cleanly, as the harness chooses) and starts it again on the same port and store. */
  readonly restart: () => Promise<void>
  /** Stops it by its pid and removes its store; safe after any failure. */
  readonly destroy: () => Promise<void>
}

/** Knobs for {@link faultSuite}. */
export interface FaultSuiteOptions {
  /** Messages published around the restart. Default 200. */
  readonly messages?: number
  /** How long a fresh subscription needs before it receives (broker-side consumer set-up). Default 300 ms. */
  readonly subscribeSettle?: Duration.DurationInput
  /** How long everything may take to arrive once the service is back. Default 30 s. */
  readonly recovery?: Duration.DurationInput
  /** Topic name prefix. Default `bulwark-fault`. */
  readonly topicPrefix?: string
  /** Per-test timeout in ms. Default 120 000 (a private RabbitMQ node takes seconds to boot). */
  readonly testTimeout?: number
}

/**
 * The transport fault suite (Watermill's `TestReconnect` idea): `start` brings up a private instance of the
 * driver's service, `transport` builds the driver against it, and each test restarts the service under a
 * running transport. It checks that nothing a publish confirmed is lost, that every subscription resumes by
 * itself (the stream neither ends nor fails), and that a driver declaring `persistent` keeps what was published
 * before a restart for a new process.
 */
export const faultSuite = <E>(
  name: string,
  start: () => Promise<PrivateService>,
  transport: (service: PrivateService) => Layer.Layer<Publisher | Subscriber, E>,
  options: FaultSuiteOptions = {}
): void => {
  const timeout = options.testTimeout ?? 120_000
  const prefix = options.topicPrefix ?? "bulwark-fault"
  const settle = Duration.decode(options.subscribeSettle ?? "300 millis")
  const recovery = Duration.decode(options.recovery ?? "30 seconds")
  const total = options.messages ?? 200
  const Service = Context.GenericTag<PrivateService>("@bulwark/transport/Contract/PrivateService")
  const service = Layer.scoped(
    Service,
    Effect.acquireRelease(Effect.promise(start), (started) => Effect.promise(() => started.destroy()))
  )
  const ports = (running: PrivateService): Effect.Effect<Context.Context<Publisher | Subscriber>, E, Scope.Scope> =>
    Layer.build(transport(running))
  // A publish during the outage fails typed and is sent again, as any producer must: ids make repeats harmless.
  const publishRetrying = (publisher: Context.Tag.Service<Publisher>, topic: string, messages: ReadonlyArray<OutgoingMessage>) =>
    publisher.publish(topic, messages).pipe(
      Effect.retry(Schedule.spaced("100 millis")),
      Effect.timeoutFail({ duration: recovery, onTimeout: () => new Error(`publishing to ${topic} did not recover`) })
    )
  const waitUntil = (label: string, condition: () => boolean) =>
    Effect.gen(function*() {
      while (!condition()) yield* Effect.sleep("20 millis")
    }).pipe(Effect.timeoutFail({ duration: recovery, onTimeout: () => new Error(`timed out waiting until ${label}`) }))

  layer(service, { excludeTestServices: true, timeout: "120 seconds" })(`transport faults: ${name}`, (it) => {
    // One restart serves both checks: booting a broker (a RabbitMQ node) takes seconds.
    it.scoped(
      "a restart mid-stream loses nothing confirmed, every subscription resumes by itself, and a driver declaring `persistent` keeps what a closed process published before it",
      () =>
        Effect.gen(function*() {
          const running = yield* Service
          const topic = uniqueTopic(prefix, "restart")
          const kept = uniqueTopic(prefix, "persist")
          const sentBefore = Array.from({ length: 20 }, (_, i) => message(`s-${i}`, `k-${i % 3}`))
          // An earlier process publishes to a topic nobody consumes yet and goes away before the restart.
          yield* Effect.scoped(Effect.flatMap(ports(running), (context) => Context.get(context, Publisher).publish(kept, sentBefore)))

          const context = yield* ports(running)
          const publisher = Context.get(context, Publisher)
          const subscriber = Context.get(context, Subscriber)
          const groups = subscriber.features.consumerGroups ? ["default", "second"] : ["default"]
          const acked = groups.map(() => new Set<string>())
          const ackedSinceRestart = groups.map(() => 0)
          let restarted = false
          const subscriptions = yield* Effect.forEach(groups, (group, g) =>
            subscriber.subscribe(topic, { group }).pipe(
              Stream.runForEach((d) =>
                // Slow enough that the restart hits deliveries in flight and prefetched ones.
                Effect.zipRight(
                  Effect.sleep("3 millis"),
                  d.ack.pipe(
                    Effect.tap(() => {
                      acked[g]!.add(d.message.id)
                      if (restarted) ackedSinceRestart[g]!++
                    }),
                    // An ack lost with the connection is no error here: the message comes back and is acked again.
                    Effect.ignore
                  )
                )
              ),
              Effect.fork
            ))
          yield* Effect.sleep(settle)
          const confirmed = new Set<string>()
          const publishBatches = (from: number, to: number) =>
            Effect.forEach(Array.from({ length: Math.ceil((to - from) / 10) }, (_, b) => from + b * 10), (first) => {
              const batch = Array.from({ length: Math.min(10, to - first) }, (_, i) => message(`r-${first + i}`, `k-${(first + i) % 7}`))
              return Effect.zipRight(
                publishRetrying(publisher, topic, batch),
                Effect.sync(() => batch.forEach((m) => confirmed.add(m.id)))
              )
            }, { discard: true })
          const half = Math.floor(total / 2)
          yield* publishBatches(0, half)
          yield* waitUntil("every group has acked a few", () => acked.every((set) => set.size >= Math.min(20, half)))
          // The rest is published while the service goes down and comes back.
          const rest = yield* Effect.fork(publishBatches(half, total))
          yield* Effect.promise(() => running.restart())
          restarted = true
          yield* Fiber.join(rest)
          // Something is certainly published after the restart, so every subscription must take it.
          yield* publishBatches(total, total + 10)
          yield* waitUntil("every group has acked everything confirmed", () =>
            acked.every((set) => [...confirmed].every((id) => set.has(id))))
          const polls = yield* Effect.forEach(subscriptions, Fiber.poll)
          yield* Effect.forEach(subscriptions, Fiber.interrupt, { discard: true })
          expect(confirmed.size).toBe(total + 10)
          for (let g = 0; g < groups.length; g++) {
            expect([...confirmed].filter((id) => !acked[g]!.has(id))).toEqual([])
            expect(ackedSinceRestart[g]).toBeGreaterThan(0)
            // Still running: the subscription neither ended nor failed across the restart.
            expect(Option.isNone(polls[g]!)).toBe(true)
          }

          if (!subscriber.features.persistent) return
          // Acked as they come: a driver ordered per key holds a key's next message until the previous one settles.
          const received = new Set<string>()
          yield* subscriber.subscribe(kept).pipe(
            Stream.tap((d) => Effect.zipRight(d.ack, Effect.sync(() => received.add(d.message.id)))),
            Stream.takeUntil(() => received.size === sentBefore.length),
            Stream.runDrain,
            Effect.timeoutFail({ duration: recovery, onTimeout: () => new Error(`received ${received.size} of ${sentBefore.length}`) })
          )
          expect([...received].sort()).toEqual(sentBefore.map((m) => m.id).sort())
        }),
      timeout
    )
  })
}

/** A password for a driver's redaction test: unique, so finding it anywhere is proof of a leak. */
export const testPassword = (): string => `pw-${Math.random().toString(36).slice(2)}-s3cret`

/** A loopback port nothing listens on (never one of the shared services). */
export const closedPort: Effect.Effect<number> = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  }))

/**
 * Runs `connect`, which must fail, with every log line captured (all levels, annotations and causes), and
 * answers each text a user could see: the log lines, the failure's message, its cause, `String`, `inspect`
 * and the pretty cause.
 */
export const visibleTexts = <A, E, R>(connect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    const capture = Logger.replace(Logger.defaultLogger, Logger.make((options) => void lines.push(Logger.logfmtLogger.log(options))))
    const exit = yield* connect.pipe(
      Effect.tapErrorCause((cause) => Effect.logError("start failed", cause)),
      Effect.timeout("30 seconds"),
      Effect.exit,
      Effect.provide(Layer.merge(capture, Logger.minimumLogLevel(LogLevel.All)))
    )
    expect(Exit.isFailure(exit)).toBe(true)
    if (Exit.isSuccess(exit)) return lines
    const texts = [...lines, Cause.pretty(exit.cause), inspect(exit.cause, { depth: 10 })]
    for (const error of Cause.failures(exit.cause)) {
      const cause = (error as { cause?: unknown }).cause
      texts.push(String(error), (error as { message?: string }).message ?? "", String(cause), inspect(error, { depth: 10 }))
    }
    return texts
  })

/** Fails when any of `texts` shows `password`, as written or URL-encoded. */
export const expectNoPassword = (texts: ReadonlyArray<string>, password: string): void => {
  expect(texts.length).toBeGreaterThan(0)
  for (const text of texts) {
    expect(text).not.toContain(password)
    expect(text).not.toContain(encodeURIComponent(password))
  }
}
