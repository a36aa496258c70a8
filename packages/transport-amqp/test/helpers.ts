import { Effect, Layer } from "effect"
import * as AmqpTransport from "../src/AmqpTransport.js"

/** A per-run name prefix, so parallel runs against the shared broker never meet. */
export const testPrefix = (label: string) =>
  `bulwark-amqp-test-${label}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`

/** The transport against the local broker, deleting every queue and exchange named with `prefix` at the end. */
export const transportWithCleanup = (prefix: string, options: AmqpTransport.Options = {}) => {
  const cleanup = Layer.scopedDiscard(
    Effect.flatMap(AmqpTransport.AmqpClient, (client) =>
      Effect.addFinalizer(() =>
        client.deleteDeclared((name) => name.startsWith(prefix)).pipe(
          Effect.catchAll((error) => Effect.logError(`test clean-up failed: ${error.message}`))
        )
      ))
  )
  return Layer.provideMerge(cleanup, AmqpTransport.layer(options))
}

/** A transport for one test, deleting what it declared under `prefix` before its connection closes. */
export const scopedTransport = (prefix: string, options: AmqpTransport.Options = {}) =>
  Effect.gen(function*() {
    const transport = yield* AmqpTransport.make(options)
    yield* Effect.addFinalizer(() =>
      transport.deleteDeclared((name) => name.startsWith(prefix)).pipe(
        Effect.catchAll((error) => Effect.logError(`test clean-up failed: ${error.message}`))
      )
    )
    return transport
  })

const encoder = new TextEncoder()

/** An outgoing message whose payload is its id. */
export const outgoing = (id: string, key = "", headers: Record<string, string> = {}) => ({
  id,
  key,
  payload: encoder.encode(id),
  headers
})
