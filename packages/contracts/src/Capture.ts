/**
 * What the code really does, against what the contracts declare: run the application (or a test of it)
 * under {@link capture} and every payload schema the transports, the outbox, the webhook ingress and the
 * consumers use is recorded (`SchemaUse` in `@bulwark/core`); {@link undeclared} lists the uses no
 * declaration covers — a topic, type or consumer group missing from the contracts, or a schema that drifted
 * from the declared one.
 */
import { SchemaUse } from "@bulwark/core"
import { Effect } from "effect"
import * as Contract from "./Contract.js"

/** Runs `effect`, recording every schema use inside it (and in the fibers it forks); deduplicated. */
export const capture = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<{ readonly result: A; readonly uses: ReadonlyArray<SchemaUse.SchemaUse> }, E, R> =>
  Effect.suspend(() => {
    const uses = new Map<string, SchemaUse.SchemaUse>()
    // Schemas are told apart by identity: two uses of one schema value are one use.
    const ids = new WeakMap<object, number>()
    let next = 0
    const idOf = (schema: object) => {
      let id = ids.get(schema)
      if (id === undefined) {
        id = ++next
        ids.set(schema, id)
      }
      return id
    }
    const record: SchemaUse.Recorder = (use) => {
      const key = [use.role, use.topic, use.type ?? "", use.source ?? "", use.group ?? "", idOf(use.schema)].join("\u0000")
      if (!uses.has(key)) uses.set(key, use)
    }
    return Effect.map(SchemaUse.recording(effect, record), (result) => ({ result, uses: [...uses.values()] }))
  })

/** A use no declaration covers. */
export interface Gap {
  readonly use: SchemaUse.SchemaUse
  readonly reason: string
}

const jsonOf = (schema: SchemaUse.SchemaUse["schema"]): string | undefined => {
  try {
    return JSON.stringify(Contract.jsonSchemaOf(schema as never))
  } catch {
    return undefined
  }
}

const sameSchema = (a: SchemaUse.SchemaUse["schema"], b: SchemaUse.SchemaUse["schema"]) => a === b || (jsonOf(a) !== undefined && jsonOf(a) === jsonOf(b))

/** The uses that `services` do not declare (empty: the contracts cover what the code does). */
export const undeclared = (uses: ReadonlyArray<SchemaUse.SchemaUse>, services: ReadonlyArray<Contract.Service>): ReadonlyArray<Gap> => {
  const gaps: Array<Gap> = []
  const producers = services.flatMap((s) => s.produces)
  const consumers = services.flatMap((s) => s.consumes)
  for (const use of uses) {
    if (use.role === "produce") {
      const declared = producers.filter((p) => p.topic === use.topic && p.type === use.type)
      if (declared.length === 0) gaps.push({ use, reason: `${use.type ?? "?"} is written to ${use.topic} but no producer contract declares it` })
      else if (!declared.some((p) => sameSchema(p.schema, use.schema))) gaps.push({ use, reason: `${use.type ?? "?"} on ${use.topic} is written with a schema other than the declared one` })
      else if (use.source !== undefined && !declared.some((p) => p.source === use.source)) gaps.push({ use, reason: `${use.type ?? "?"} on ${use.topic} is written with source ${use.source}, the contract says ${declared[0]!.source}` })
    } else {
      const declared = consumers.filter((c) => c.topic === use.topic && c.group === use.group)
      if (declared.length === 0) gaps.push({ use, reason: `group ${use.group ?? "?"} consumes ${use.topic} but no consumer contract declares it` })
      else if (!declared.some((c) => sameSchema(c.schema, use.schema))) gaps.push({ use, reason: `group ${use.group ?? "?"} decodes ${use.topic} with a schema other than the declared one` })
    }
  }
  return gaps
}
