import type { Delivery } from "@bulwark/core"
import { Clock, Deferred, Duration, Effect, FiberId, Stream } from "effect"
import * as Driver from "../Driver.js"
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
  readonly ready: ReadyQueue
  readonly delayed: Array<{ readonly stored: Stored; readonly visibleAt: number }>
  readonly inFlight: Map<number, InFlight>
  /** Keys with a message in flight or delayed: their later messages wait when ordering is on. */
  readonly busyKeys: Map<string, number>
  wake: Deferred.Deferred<void>
  /** Whether a subscriber waits on `wake`: only then does a change need a new signal. */
  waiting: boolean
  /** The topic this group reads, whose waiting publishers a settlement may let through. */
  readonly topic: TopicState
}

interface TopicState {
  /** Messages published while the topic had no group: handed to the first group that subscribes. */
  backlog: Array<Stored> | undefined
  readonly groups: Map<string, GroupState>
  /** Publishers waiting for room (the topic is at `capacity`); signalled when a settlement frees some. */
  room: Deferred.Deferred<void> | undefined
}

export interface MemoryOptions {
  readonly visibilityTimeout?: Duration.DurationInput
  readonly orderedPerKey?: boolean
  readonly capacity?: number
}

/**
 * Messages ready for delivery, in `seq` order. Taking from the front is O(1) (a moving head, compacted now and
 * then) so a deep backlog is not shifted once per delivery; redeliveries are inserted at their place.
 */
class ReadyQueue {
  private items: Array<Stored>
  private head = 0

  constructor(initial: Array<Stored> = []) {
    this.items = initial
  }

  get length(): number {
    return this.items.length - this.head
  }

  at(index: number): Stored {
    return this.items[this.head + index]!
  }

  push(stored: Stored): void {
    this.items.push(stored)
  }

  insertBySeq(stored: Stored): void {
    let lo = this.head
    let hi = this.items.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.items[mid]!.seq < stored.seq) lo = mid + 1
      else hi = mid
    }
    if (lo === this.head && this.head > 0) {
      this.items[--this.head] = stored
      return
    }
    this.items.splice(lo, 0, stored)
  }

  removeAt(index: number): void {
    if (index === 0) {
      this.items[this.head] = undefined as unknown as Stored
      this.head++
      if (this.head === this.items.length) {
        this.items = []
        this.head = 0
      } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
        this.items = this.items.slice(this.head)
        this.head = 0
      }
      return
    }
    this.items.splice(this.head + index, 1)
  }
}

/** Unsettled messages per topic and group beyond which a publisher waits. */
export const defaultCapacity = 100_000

export const make = (options: MemoryOptions = {}) =>
  Effect.sync(() => {
    const visibilityMillis = Duration.toMillis(Duration.decode(options.visibilityTimeout ?? "30 seconds"))
    const orderedPerKey = options.orderedPerKey ?? false
    const capacity = Math.max(1, options.capacity ?? defaultCapacity)
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
        state = { backlog: [], groups: new Map(), room: undefined }
        topics.set(topic, state)
      }
      return state
    }

    const wake = (group: GroupState) => {
      if (!group.waiting) return
      group.waiting = false
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
          ready: new ReadyQueue(state.backlog),
          delayed: [],
          inFlight: new Map(),
          busyKeys: new Map(),
          wake: Deferred.unsafeMake(FiberId.none),
          waiting: false,
          topic: state
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
          group.ready.insertBySeq(entry.stored)
        } else if (entry.visibleAt < next) next = entry.visibleAt
      }
      for (const [token, flight] of group.inFlight) {
        if (flight.deadline <= now) {
          group.inFlight.delete(token)
          busy(group, flight.stored.message.key, -1)
          group.ready.insertBySeq(flight.stored)
        } else if (flight.deadline < next) next = flight.deadline
      }
      return next
    }

    const claim = (group: GroupState, now: number): InFlight | undefined => {
      for (let i = 0; i < group.ready.length; i++) {
        const stored = group.ready.at(i)
        if (orderedPerKey && stored.message.key !== "" && group.busyKeys.has(stored.message.key)) continue
        group.ready.removeAt(i)
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

    /** Messages of a group not yet acked or dead-lettered: what `capacity` bounds. */
    const unsettled = (group: GroupState): number => group.ready.length + group.delayed.length + group.inFlight.size

    const hasRoom = (state: TopicState): boolean => {
      if (state.backlog !== undefined && state.backlog.length >= capacity) return false
      for (const group of state.groups.values()) if (unsettled(group) >= capacity) return false
      return true
    }

    /** A message left the topic for good: let waiting publishers re-check (they wait only while it is full). */
    const freed = (state: TopicState) => {
      const room = state.room
      if (room === undefined || !hasRoom(state)) return
      state.room = undefined
      Deferred.unsafeDone(room, Effect.void)
    }

    /**
     * Waits until every group of `topic` (or its backlog, before any group exists) holds fewer than `capacity`
     * unsettled messages: backpressure, like a broker's flow control, instead of an ever-growing heap. A batch
     * is admitted whole once there is room, so a topic can exceed `capacity` by one batch at most.
     */
    const awaitRoom = (topic: string): Effect.Effect<void> =>
      Effect.suspend(() => {
        const state = topics.get(topic)
        if (state === undefined || hasRoom(state)) return Effect.void
        if (state.room === undefined) state.room = Deferred.unsafeMake(FiberId.none)
        return Effect.zipRight(Deferred.await(state.room), awaitRoom(topic))
      })

    // Settle-once comes from the driver base; a stale receipt (the delivery already timed out and went back)
    // settles nothing here either: the redelivery wins.
    const toDelivery = (group: GroupState, flight: InFlight): Delivery.Delivery =>
      Driver.delivery(flight.stored.message, flight.stored.attempts, {
        ack: Effect.sync(() => {
          if (!settle(group, flight)) return
          wake(group)
          freed(group.topic)
        }),
        nack: (delay) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) =>
            Effect.sync(() => {
              if (!settle(group, flight)) return
              if (delay > 0) {
                group.delayed.push({ stored: flight.stored, visibleAt: now + delay })
                busy(group, flight.stored.message.key, 1)
              } else {
                group.ready.insertBySeq(flight.stored)
              }
              wake(group)
            })),
        deadLetter: (copy) =>
          Effect.sync(() => {
            if (!settle(group, flight)) return
            append(Driver.deadLetterTopic(flight.stored.message.topic), [copy])
            wake(group)
            freed(group.topic)
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
          group.waiting = true
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
      // Dead-letter copies (above) bypass the bound: a settlement must never wait on another topic's consumer.
      publish: (topic: string, messages: ReadonlyArray<OutgoingMessage>) =>
        Effect.zipRight(awaitRoom(topic), Effect.sync(() => append(topic, messages))),
      // With room, appending is all a publish does: callers on a hot path (the webhook ingress) need no fiber.
      storeNow: (topic: string) => {
        const state = topics.get(topic)
        return state === undefined || hasRoom(state)
          ? (messages: ReadonlyArray<OutgoingMessage>) => append(topic, messages)
          : undefined
      },
      subscribe,
      pending
    }
  })
