// A CDC relay in its own process, for the kill test: `node --import tsx cdc-relay-child.ts <url> <table> <sink>`.
// After each publish the transport confirmed it prints `published <ids>` and holds for a minute before the
// relay may delete the rows and confirm the slot, so a SIGKILL on that line lands exactly between the two.
import * as CdcRelay from "@bulwark/outbox/CdcRelay"
import { Database } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import { Effect, Layer } from "effect"
import { sinkPublisher } from "../../packages/outbox/test/fixtures/sink.js"

const [url, table, sink] = process.argv.slice(2) as [string, string, string]

const holding = Layer.effect(
  Transport.Publisher,
  Effect.map(Transport.Publisher, (inner) => ({
    publish: (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) =>
      inner.publish(topic, messages).pipe(
        Effect.tap(() => Effect.sync(() => process.stdout.write(`published ${messages.map((m) => m.id).join(",")}\n`))),
        Effect.zipLeft(Effect.sleep("60 seconds"))
      )
  }))
).pipe(Layer.provide(sinkPublisher(sink)), Layer.provide(Database.layerPostgres({ url })))

Effect.runPromise(
  CdcRelay.run({ connection: url, table, name: "killed", batchSize: 50 }).pipe(Effect.provide(holding))
).catch((error) => {
  process.stderr.write(`${String(error)}\n`)
  process.exit(1)
})
