/**
 * The JetStream topology: one stream per topic (created by the first publish or subscribe, adopted if it exists
 * with our subject) and one durable pull consumer per topic and group.
 */
import {
  AckPolicy,
  type ConsumerConfig,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamManager,
  nanos,
  RetentionPolicy,
  type StreamConfig
} from "nats"
import type { Resolved } from "./protocol.js"
import type * as Names from "./names.js"

/** Streams and consumers, declared on first use. */
export interface Topology {
  /** Creates the topic's stream unless this process already knows it exists. */
  readonly ensureStream: (target: Names.TopicNames) => Promise<void>
  /** Forgets a stream that turned out to be gone, so the next `ensureStream` creates it again. */
  readonly forgetStream: (stream: string) => void
  /** Creates (or updates) a group's durable pull consumer. */
  readonly ensureConsumer: (target: Names.TopicNames, durable: string) => Promise<void>
  /** How many deliveries the server counts unsettled (delivered, neither acked nor given up) for a consumer. */
  readonly ackPending: (stream: string, durable: string) => Promise<number>
}

/** The topology over the JetStream manager. */
export const make = (jsm: JetStreamManager, resolved: Resolved): Topology => {
  const readyStreams = new Set<string>()

  const createStream = async (target: Names.TopicNames) => {
    const config: Partial<StreamConfig> = {
      name: target.stream,
      subjects: [target.subject],
      retention: RetentionPolicy.Limits,
      storage: resolved.storage,
      discard: DiscardPolicy.Old,
      num_replicas: resolved.replicas,
      duplicate_window: nanos(resolved.dedupeWindow),
      max_age: nanos(resolved.maxAge)
    }
    try {
      await jsm.streams.add(config)
    } catch (cause) {
      // Created meanwhile by another process, or by an operator with other limits: use it if it carries our subject.
      const info = await jsm.streams.info(target.stream).catch(() => {
        throw cause
      })
      if (!(info.config.subjects ?? []).includes(target.subject)) {
        throw new Error(`stream ${target.stream} exists but does not carry subject ${target.subject}`)
      }
    }
    readyStreams.add(target.stream)
  }

  const ensureStream = (target: Names.TopicNames) =>
    readyStreams.has(target.stream) ? Promise.resolve() : createStream(target)

  const ensureConsumer = async (target: Names.TopicNames, durable: string): Promise<void> => {
    await ensureStream(target)
    const config: Partial<ConsumerConfig> = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(resolved.ackWait),
      // The server's own limit would park a message silently; the driver dead-letters past `maxDeliver` instead.
      max_deliver: -1,
      ...(resolved.maxAckPending === undefined ? {} : { max_ack_pending: resolved.maxAckPending })
    }
    try {
      await jsm.consumers.add(target.stream, config)
    } catch (cause) {
      // It exists with other settings (an earlier deployment): bring the editable ones up to date.
      await jsm.consumers.info(target.stream, durable).catch(() => {
        throw cause
      })
      await jsm.consumers.update(target.stream, durable, {
        ack_wait: config.ack_wait!,
        max_deliver: -1,
        ...(resolved.maxAckPending === undefined ? {} : { max_ack_pending: resolved.maxAckPending })
      })
    }
  }

  const ackPending = async (stream: string, durable: string) => (await jsm.consumers.info(stream, durable)).num_ack_pending

  return { ensureStream, forgetStream: (stream) => void readyStreams.delete(stream), ensureConsumer, ackPending }
}
