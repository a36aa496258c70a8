/** The dispatch store in process memory: tests, the simulator, single-process tools; nothing survives a restart. */
import { Effect, Layer, Option } from "effect"
import {
  type Claim,
  type DeliveryRecord,
  DispatchStore,
  type EndpointRecord,
  type Filter,
  type Service,
  type StoredMessage
} from "../DispatchStore.js"
import type { Attempt } from "../Sender.js"

interface MemoryDelivery {
  record: DeliveryRecord
  token: string | undefined
  claimedUntil: number
}

/** A store in process memory, built synchronously (the simulator builds one per run). */
export const unsafeMake = (): Service => {
  const endpoints = new Map<string, EndpointRecord>()
  const messages = new Map<string, StoredMessage>()
  const deliveries = new Map<string, MemoryDelivery>()
  const attempts = new Map<string, Array<Attempt>>()
  let tokens = 0
  const keyOf = (messageId: string, endpointId: string) => JSON.stringify([messageId, endpointId])
  const matches = (filter: Filter, record: DeliveryRecord) =>
    (filter.messageId === undefined || record.messageId === filter.messageId) &&
    (filter.endpointId === undefined || record.endpointId === filter.endpointId) &&
    (filter.state === undefined || record.state === filter.state) &&
    (filter.since === undefined || record.createdAt >= filter.since)
  return {
    putEndpoint: (endpoint) =>
      Effect.sync(() => {
        const old = endpoints.get(endpoint.id)
        endpoints.set(endpoint.id, { disabled: false, ...old, id: endpoint.id, url: endpoint.url, secrets: [...endpoint.secrets] })
      }),
    endpoint: (id) => Effect.sync(() => Option.fromNullable(endpoints.get(id))),
    endpoints: Effect.sync(() => [...endpoints.values()]),
    updateEndpoint: (id, patch) =>
      Effect.sync(() => {
        const old = endpoints.get(id)
        if (old === undefined) return
        endpoints.set(id, {
          ...old,
          ...(patch.disabled === undefined ? {} : { disabled: patch.disabled }),
          ...(patch.disabledReason === undefined ? {} : { disabledReason: patch.disabledReason ?? undefined }),
          ...(patch.failingSince === undefined ? {} : { failingSince: patch.failingSince ?? undefined })
        })
      }),
    enqueue: (message, endpointIds) =>
      Effect.sync(() => {
        if (!messages.has(message.id)) messages.set(message.id, message)
        let added = 0
        for (const endpointId of new Set(endpointIds)) {
          const key = keyOf(message.id, endpointId)
          if (deliveries.has(key)) continue
          deliveries.set(key, {
            record: {
              messageId: message.id,
              endpointId,
              state: "pending",
              attempts: 0,
              dueAt: message.createdAt,
              createdAt: message.createdAt,
              updatedAt: message.createdAt
            },
            token: undefined,
            claimedUntil: 0
          })
          added++
        }
        return added
      }),
    claim: ({ leaseMillis, limit, now }) =>
      Effect.sync(() => {
        const due = [...deliveries.values()]
          .filter((d) => d.record.state === "pending" && d.record.dueAt <= now && d.claimedUntil <= now)
          .sort((a, b) => a.record.dueAt - b.record.dueAt)
          .slice(0, Math.max(0, limit))
        const claims: Array<Claim> = []
        for (const d of due) {
          const endpoint = endpoints.get(d.record.endpointId)
          const message = messages.get(d.record.messageId)
          if (endpoint === undefined || message === undefined) continue
          d.token = `t${++tokens}`
          d.claimedUntil = now + leaseMillis
          claims.push({ delivery: d.record, message, endpoint, token: d.token })
        }
        return claims
      }),
    settle: (token, delivery, attempt, settlement, now) =>
      Effect.sync(() => {
        const d = deliveries.get(keyOf(delivery.messageId, delivery.endpointId))
        if (d === undefined || d.token !== token || d.record.state !== "pending") return false
        if (attempt !== undefined) {
          const list = attempts.get(attempt.messageId) ?? []
          list.push(attempt)
          attempts.set(attempt.messageId, list)
        }
        d.token = undefined
        d.claimedUntil = 0
        d.record = {
          ...d.record,
          attempts: d.record.attempts + (attempt === undefined ? 0 : 1),
          updatedAt: now,
          state: settlement._tag === "Retry" ? "pending" : settlement._tag === "Delivered" ? "delivered" : "failed",
          dueAt: settlement._tag === "Retry" ? settlement.dueAt : d.record.dueAt,
          failReason: settlement._tag === "Failed" ? settlement.reason : undefined
        }
        return true
      }),
    attempts: (messageId) => Effect.sync(() => [...(attempts.get(messageId) ?? [])]),
    deliveries: (filter) =>
      Effect.sync(() =>
        [...deliveries.values()].map((d) => d.record).filter((r) => matches(filter, r))
          .sort((a, b) => a.createdAt - b.createdAt)
          .slice(0, filter.limit ?? 100)
      ),
    requeue: (filter, now) =>
      Effect.sync(() => {
        let n = 0
        const limit = filter.limit ?? Number.POSITIVE_INFINITY
        const candidates = [...deliveries.values()]
          .filter((d) =>
            matches(filter, d.record) &&
            (d.record.state === "failed" || (filter.includeDelivered === true && d.record.state === "delivered"))
          )
          .sort((a, b) => a.record.createdAt - b.record.createdAt)
        for (const d of candidates) {
          if (n >= limit) break
          d.token = undefined
          d.claimedUntil = 0
          d.record = { ...d.record, state: "pending", dueAt: now, updatedAt: now, failReason: undefined }
          n++
        }
        return n
      }),
    nextDue: Effect.sync(() => {
      let next: number | undefined
      for (const d of deliveries.values()) {
        if (d.record.state !== "pending") continue
        const at = Math.max(d.record.dueAt, d.claimedUntil)
        if (next === undefined || at < next) next = at
      }
      return Option.fromNullable(next)
    })
  }
}

/** A store in process memory: for tests, the simulator and single-process tools (nothing survives a restart). */
export const make = (): Effect.Effect<Service> => Effect.sync(unsafeMake)

/** Provides a memory store. */
export const layer = (): Layer.Layer<DispatchStore> => Layer.sync(DispatchStore, unsafeMake)
