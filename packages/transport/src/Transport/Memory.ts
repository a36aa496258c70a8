/**
 * The in-process transport: at least once, with visibility timeout, redelivery of unsettled messages,
 * delayed nack, optional per-key ordering and a dead-letter topic per topic. Time comes from Effect's
 * `Clock`, so `TestClock` and the simulator's clock drive it.
 *
 * Consumer groups are created by their first subscriber. Messages published while a topic has no group
 * wait and go to the first group that subscribes; later groups see only what is published after them.
 *
 * Everything lives in the heap, so a topic holds at most `capacity` unsettled messages per group: beyond it
 * `publish` waits (interruptibly) until a consumer acks or dead-letters one, the way a broker's flow control
 * slows a producer down.
 */
import { Context, type Effect, type Layer } from "effect"
import * as Driver from "../Driver.js"
import * as internal from "../internal/memory.js"
import type { Publisher, Subscriber } from "../Transport.js"

/** Settings of the memory transport. */
export interface Options {
  /** How long a delivery may stay unsettled before it is redelivered. Default 30 s. */
  readonly visibilityTimeout?: import("effect").Duration.DurationInput
  /** One unsettled message per key at a time, in publish order. Default false. */
  readonly orderedPerKey?: boolean
  /**
   * Unsettled messages a topic holds per consumer group (or before its first group) before a publisher waits
   * for consumers to make room, so a producer faster than its consumers cannot grow the heap without bound.
   * Dead-letter copies are never held back. Default 100 000.
   */
  readonly capacity?: number
}

/** The memory transport with its inspection hooks. */
export interface MemoryTransport extends Effect.Effect.Success<ReturnType<typeof internal.make>> {}

/** Inspection of the memory transport (pending counts), for tests and the quick start. */
export class MemoryTransportInspector extends Context.Tag("@bulwark/transport/MemoryTransportInspector")<
  MemoryTransportInspector,
  { readonly pending: (topic: string, group?: string) => number }
>() {}

/** Creates a memory transport. */
export const make = (options: Options = {}): Effect.Effect<MemoryTransport> => internal.make(options)

/** Provides `Publisher`, `Subscriber` and `MemoryTransportInspector` from one in-process transport. */
export const layer = (options: Options = {}): Layer.Layer<Publisher | Subscriber | MemoryTransportInspector> =>
  Driver.layer(make(options), { system: "memory", service: MemoryTransportInspector })
