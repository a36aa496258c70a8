/**
 * A PostgreSQL server that stops answering (hung, or a network path that drops packets without a reset), put
 * between the relay and the shared server by a proxy that holds what the client sends: the relay must still
 * stop when its scope closes, instead of waiting for ever on its finalizers.
 */
import { Database } from "@bulwark/sql"
import { expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Layer, Scope } from "effect"
import * as Outbox from "../src/Outbox.js"
import * as Relay from "../src/Relay.js"
import * as FaultProxy from "../../transport/test/support/FaultProxy.js"
import { dropOutbox, postgresUrl, recordingPublisher, uniqueTable } from "./helpers.js"

it.live("a relay asleep on a database that stops answering stops within seconds when its scope closes", () =>
  Effect.gen(function*() {
    const table = uniqueTable("stall")
    const target = new URL(postgresUrl)
    const proxy = yield* Effect.acquireRelease(
      Effect.promise(() => FaultProxy.start({ port: Number(target.port || 5432) })),
      (p) => Effect.promise(p.destroy)
    )
    const through = new URL(postgresUrl)
    through.host = `127.0.0.1:${proxy.port}`
    const scope = yield* Scope.make()
    const { layer: publisher } = recordingPublisher()
    const context = yield* Layer.buildWithScope(
      Layer.provideMerge(Outbox.layer({ table }), Database.layerPostgres({ url: through.toString() })),
      scope
    )
    // The relay finds nothing, registers as asleep (its finalizer deregisters) and waits on its LISTEN connection.
    yield* Relay.run({ relayId: "stalled", pollInterval: "200 millis" }).pipe(
      Effect.provide(Layer.merge(Layer.succeedContext(context), publisher)),
      Effect.forkIn(scope)
    )
    yield* Effect.sleep("1 second")
    proxy.stall(true)
    const started = Date.now()
    const closed = yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("60 seconds"), Effect.exit)
    const took = Date.now() - started
    proxy.stall(false)
    expect(Exit.isSuccess(closed)).toBe(true)
    expect(took).toBeLessThan(Duration.toMillis("30 seconds"))
    yield* dropOutbox(table).pipe(Effect.provide(Database.layerPostgres({ url: postgresUrl })))
  }).pipe(Effect.scoped), 120_000)
