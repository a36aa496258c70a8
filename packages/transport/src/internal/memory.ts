import { Delivery } from "@bulwark/core"
import { Clock, Deferred, Duration, Effect, FiberId, Stream } from "effect"
import type { Features, OutgoingMessage, SubscribeOptions } from "../Transport.js"

interface Stored {
  readonly seq: number
  readonly message: Delivery.Message
  attempts: number
}

interface InFlight {
  readonly stored: Stored
  readonly token: number
  deadline: number
}

interface GroupState {
  /** Ready to deliver, sorted by `seq` so a redelivered message keeps its place. */
  readonly ready: Array<Stored>
  readonly delayed: Array<{ readonly stored: Stored; readonly visibleAt: number }>
  readonly inFlight: Map<number, InFlight>
  /** Keys with a message in flight or delayed: their later messages wait when ordering is on. */
  readonly busyKeys: Map<string, number>
  wake: Deferred.Deferred<void>
}

interface TopicState {
  /** Messages published while the topic had no group: handed to the first group that subscribes. */
  backlog: Array<Stored> | undefined
  readonly groups: Map<string, GroupState>
}

export interface MemoryOptions {
  readonly visibilityTimeout?: Duration.DurationInput
  readonly orderedPerKey?: boolean
}

const insertBySeq = (ready: Array<Stored>, stored: Stored) => {
  let lo = 0
  let hi = ready.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (ready[mid]!.seq < stored.seq) lo = mid + 1
    else hi = mid
  }
  ready.splice(lo, 0, stored)
}

export const make = (options: MemoryOptions = {}) =>
  Effect.sync(() => {
    const visibilityMillis = Duration.toMillis(Duration.decode(options.visibilityTimeout ?? "30 seconds"))
    const orderedPerKey = options.orderedPerKey ?? false
    const topics = new Map<string, TopicState>()
    let seq = 0
    let tokens = 0

    const features: Features = {
      orderedPerKey,
      delayedNack: true,
      visibilityTimeout: Duration.millis(visibilityMillis),
      deadLetterTopic: true,
      consumerGroups: true,
      persistent: false
    }

    const topicState = (topic: string): TopicState => {
      let state = topics.get(topic)
      if (state === undefined) {
        state = { backlog: [], groups: new Map() }
        topics.set(topic, state)
      }
      return state
    }

    const wake = (group: GroupState) => {
      const previous = group.wake
      group.wake = Deferred.unsafeMake(FiberId.none)
      Deferred.unsafeDone(previous, Effect.void)
    }

    const busy = (group: GroupState, key: string, delta: number) => {
      if (key === "") return
      const count = (group.busyKeys.get(key) ?? 0) + delta
      if (count <= 0) group.busyKeys.delete(key)
      else group.busyKeys.set(key, count)
    }

    const append = (topic: string, messages: ReadonlyArray<OutgoingMessage>) => {
      const state = topicState(topic)
      for (const outgoing of messages) {
        const stored: Stored = {
          seq: seq++,
          attempts: 0,
          message: {
            id: outgoing.id,
            topic,
            key: outgoing.key,
            payload: outgoing.payload,
            headers: { ...outgoing.headers }
          }
        }
        if (state.backlog !== undefined) state.backlog.push(stored)
        for (const group of state.groups.values()) {
          group.ready.push({ ...stored })
        }
      }
      for (const group of state.groups.values()) wake(group)
    }

    const groupState = (topic: string, name: string) => {
      const state = topicState(topic)
      let group = state.groups.get(name)
      if (group === undefined) {
        group = {
          ready: state.backlog ?? [],
          delayed: [],
          inFlight: new Map(),
          busyKeys: new Map(),
          wake: Deferred.unsafeMake(FiberId.none)
        }
        state.backlog = undefined
        state.groups.set(name, group)
      }
      return group
    }

    /** Moves due delayed messages and expired deliveries back to `ready`; returns the next time something is due. */
    const tick = (group: GroupState, now: number): number => {
      let next = Infinity
      for (let i = group.delayed.length - 1; i >= 0; i--) {
        const entry = group.delayed[i]!
        if (entry.visibleAt <= now) {
          group.delayed.splice(i, 1)
          busy(group, entry.stored.message.key, -1)
          insertBySeq(group.ready, entry.stored)
        } else if (entry.visibleAt < next) next = entry.visibleAt
      }
      for (const [token, flight] of group.inFlight) {
        if (flight.deadline <= now) {
          group.inFlight.delete(token)
          busy(group, flight.stored.message.key, -1)
          insertBySeq(group.ready, flight.stored)
        } else if (flight.deadline < next) next = flight.deadline
      }
      return next
    }

    const claim = (group: GroupState, now: number): InFlight | undefined => {
      for (let i = 0; i < group.ready.length; i++) {
        const stored = group.ready[i]!
        if (orderedPerKey && stored.message.key !== "" && group.busyKeys.has(stored.message.key)) continue
        group.ready.splice(i, 1)
        stored.attempts++
        const flight: InFlight = { stored, token: tokens++, deadline: now + visibilityMillis }
        group.inFlight.set(flight.token, flight)
        busy(group, stored.message.key, 1)
        return flight
      }
      return undefined
    }

    const settle = (group: GroupState, flight: InFlight): boolean => {
      if (!group.inFlight.has(flight.token)) return false
      group.inFlight.delete(flight.token)
      busy(group, flight.stored.message.key, -1)
      return true
    }

    const toDelivery = (group: GroupState, flight: InFlight): Delivery.Delivery => ({
      message: flight.stored.message,
      attempt: flight.stored.attempts,
      // A stale receipt (the delivery already timed out and went back) settles nothing: the redelivery wins.
      ack: Effect.sync(() => {
        if (settle(group, flight)) wake(group)
      }),
      nack: (nackOptions) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            if (!settle(group, flight)) return
            const delay = nackOptions?.delay === undefined ? 0 : Duration.toMillis(Duration.decode(nackOptions.delay))
            if (delay > 0) {
              group.delayed.push({ stored: flight.stored, visibleAt: now + delay })
              busy(group, flight.stored.message.key, 1)
            } else {
              insertBySeq(group.ready, flight.stored)
            }
            wake(group)
          })),
      deadLetter: (reason) =>
        Effect.sync(() => {
          if (!settle(group, flight)) return
          const message = flight.stored.message
          append(Delivery.deadLetterTopic(message.topic), [{
            id: message.id,
            key: message.key,
            payload: message.payload,
            headers: Delivery.deadLetterHeaders(message, reason)
          }])
          wake(group)
        })
    })

    const take = (group: GroupState): Effect.Effect<Delivery.Delivery> =>
      Effect.gen(function*() {
        while (true) {
          const now = yield* Clock.currentTimeMillis
          const next = tick(group, now)
          const flight = claim(group, now)
          if (flight !== undefined) return toDelivery(group, flight)
          const signal = group.wake
          if (next === Infinity) {
            yield* Deferred.await(signal)
          } else {
            yield* Effect.raceFirst(Deferred.await(signal), Effect.sleep(Duration.millis(next - now)))
          }
        }
      })

    const subscribe = (topic: string, subscribeOptions?: SubscribeOptions): Stream.Stream<Delivery.Delivery> =>
      Stream.unwrap(Effect.sync(() => {
        const group = groupState(topic, subscribeOptions?.group ?? "default")
        return Stream.repeatEffect(take(group))
      }))

    /** Messages not yet acked or dead-lettered, per group: what a test inspects to prove nothing is lost. */
    const pending = (topic: string, group = "default"): number => {
      const state = topics.get(topic)
      if (state === undefined) return 0
      const g = state.groups.get(group)
      if (g === undefined) return state.backlog?.length ?? 0
      return g.ready.length + g.delayed.length + g.inFlight.size
    }

    return {
      features,
      publish: (topic: string, messages: ReadonlyArray<OutgoingMessage>) => Effect.sync(() => append(topic, messages)),
      subscribe,
      pending
    }
  })
