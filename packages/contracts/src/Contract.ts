/**
 * Contracts between producers and consumers, declared beside the code with the very `effect/Schema` values
 * the code passes to `Outbox.append`, `Transport.publishEnvelopes`, `Transport.consume` and `Pipeline.run`,
 * and exported as one JSON file per service (JSON Schema 2020-12 through `JSONSchema.make`, plus the
 * CloudEvents `type`/`source`, the topic, the contract id and its version, and the earlier versions).
 *
 * ```ts
 * export const orderPaid = Contract.producer({ topic: "order-paid", type: "com.example.order.paid",
 *   source: "/orders", schema: OrderPaid, version: 2 })
 * export const contracts = [Contract.service("orders", { produces: [orderPaid], consumes: [...] })]
 * // producing: Envelope.make({ ..., dataschema: orderPaid.dataschema })
 * ```
 */
import { Data, Effect, JSONSchema, ParseResult, Schema } from "effect"
import { type JsonSchema, type Mode, modes } from "./Compatibility.js"

/** A producer's declaration: what it writes to a topic, under which CloudEvents type and contract version. */
export interface Producer<A = any, I = any> {
  readonly _tag: "Producer"
  /** The contract id: `<topic>/<type>` unless given. */
  readonly id: string
  readonly topic: string
  /** The CloudEvents `type` of the envelopes. */
  readonly type: string
  /** The CloudEvents `source` of the envelopes. */
  readonly source: string
  /** The payload schema (the one given to `Outbox.append` / `publishEnvelopes`). */
  readonly schema: Schema.Schema<A, I, never>
  /** The contract version, carried in every envelope's `dataschema`. */
  readonly version: number
  /** How a new version must relate to the earlier ones (default BACKWARD, as in a schema registry). */
  readonly compatibility: Mode
  /** The envelope `dataschema` of this contract version: `urn:bulwark:contract:<id>:v<version>`. */
  readonly dataschema: string
  readonly description?: string
}

/** A consumer's declaration: what it reads from a topic. */
export interface Consumer<A = any, I = any> {
  readonly _tag: "Consumer"
  readonly topic: string
  /** The consumer group (the consumer's name in reports). */
  readonly group: string
  /** The payload schema (the one given to `Transport.consume` / `Pipeline.run`). */
  readonly schema: Schema.Schema<A, I, never>
  /** Only these CloudEvents types are meant for it; default: every producer of the topic. */
  readonly types?: ReadonlyArray<string>
  /**
   * What it does with undeclared properties. Bulwark's decoding ignores them (`"ignore"`, the default), so a
   * producer may add fields without breaking it; `"reject"` for a reader that refuses them.
   */
  readonly excessProperties: "ignore" | "reject"
  readonly description?: string
}

/** A service's contracts: what it produces and consumes. */
export interface Service {
  readonly _tag: "Service"
  readonly name: string
  readonly produces: ReadonlyArray<Producer>
  readonly consumes: ReadonlyArray<Consumer>
  readonly description?: string
}

/** A declaration is not usable (bad name, version or duplicate). */
export class ContractDeclarationError extends Data.TaggedError("ContractDeclarationError")<{
  readonly message: string
}> {}

const contractPrefix = "urn:bulwark:contract:"

/** The `dataschema` URI of contract `id` at `version`. */
export const dataschemaOf = (id: string, version: number): string => `${contractPrefix}${id}:v${version}`

/** The contract id and version a `dataschema` names, if it is a Bulwark contract URI. */
export const parseDataschema = (dataschema: string | undefined): { readonly id: string; readonly version: number } | undefined => {
  if (dataschema === undefined || !dataschema.startsWith(contractPrefix)) return undefined
  const match = /^(.+):v(\d+)$/.exec(dataschema.slice(contractPrefix.length))
  return match === null ? undefined : { id: match[1]!, version: Number(match[2]) }
}

/** Declares what a producer writes. */
export const producer = <A, I>(options: {
  readonly topic: string
  readonly type: string
  readonly source: string
  readonly schema: Schema.Schema<A, I, never>
  readonly version: number
  readonly id?: string
  readonly compatibility?: Mode
  readonly description?: string
}): Producer<A, I> => {
  const id = options.id ?? `${options.topic}/${options.type}`
  return {
    _tag: "Producer",
    id,
    topic: options.topic,
    type: options.type,
    source: options.source,
    schema: options.schema,
    version: options.version,
    compatibility: options.compatibility ?? "BACKWARD",
    dataschema: dataschemaOf(id, options.version),
    ...(options.description === undefined ? {} : { description: options.description })
  }
}

/** Declares what a consumer reads. */
export const consumer = <A, I>(options: {
  readonly topic: string
  readonly group: string
  readonly schema: Schema.Schema<A, I, never>
  readonly types?: ReadonlyArray<string>
  readonly excessProperties?: "ignore" | "reject"
  readonly description?: string
}): Consumer<A, I> => ({
  _tag: "Consumer",
  topic: options.topic,
  group: options.group,
  schema: options.schema,
  excessProperties: options.excessProperties ?? "ignore",
  ...(options.types === undefined ? {} : { types: options.types }),
  ...(options.description === undefined ? {} : { description: options.description })
})

/** Declares a service's contracts. */
export const service = (name: string, options: {
  readonly produces?: ReadonlyArray<Producer>
  readonly consumes?: ReadonlyArray<Consumer>
  readonly description?: string
}): Service => ({
  _tag: "Service",
  name,
  produces: options.produces ?? [],
  consumes: options.consumes ?? [],
  ...(options.description === undefined ? {} : { description: options.description })
})

/** Whether `u` is a {@link Service} declaration. */
export const isService = (u: unknown): u is Service =>
  typeof u === "object" && u !== null && (u as { _tag?: unknown })._tag === "Service" &&
  typeof (u as { name?: unknown }).name === "string" && Array.isArray((u as { produces?: unknown }).produces)

/** Checks the declarations: names, versions, and no contract id declared twice. */
export const validate = (services: ReadonlyArray<Service>): Effect.Effect<void, ContractDeclarationError> =>
  Effect.suspend(() => {
    const names = new Set<string>()
    for (const s of services) {
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(s.name)) {
        return Effect.fail(new ContractDeclarationError({ message: `service name ${JSON.stringify(s.name)} must be letters, digits, ".", "_" or "-" (it names the contract file)` }))
      }
      if (names.has(s.name)) return Effect.fail(new ContractDeclarationError({ message: `service ${s.name} is declared twice` }))
      names.add(s.name)
      const ids = new Set<string>()
      for (const p of s.produces) {
        if (!Number.isSafeInteger(p.version) || p.version < 1) {
          return Effect.fail(new ContractDeclarationError({ message: `${s.name}: contract ${p.id} has version ${p.version}; versions are whole numbers from 1` }))
        }
        if (ids.has(p.id)) return Effect.fail(new ContractDeclarationError({ message: `${s.name}: contract ${p.id} is declared twice` }))
        ids.add(p.id)
      }
      const groups = new Set<string>()
      for (const c of s.consumes) {
        const key = `${c.topic}\u0000${c.group}`
        if (groups.has(key)) return Effect.fail(new ContractDeclarationError({ message: `${s.name}: consumer group ${c.group} of ${c.topic} is declared twice` }))
        groups.add(key)
      }
    }
    return Effect.void
  })

// ---------------------------------------------------------------------------------------------------------
// The contract file

const JsonValue = Schema.Unknown as Schema.Schema<JsonSchema>

/** An earlier version of a producer's schema, kept in the file so transitive checks can see it. */
export const VersionEntry = Schema.Struct({ version: Schema.Int, schema: JsonValue })
/** An earlier version of a producer's schema. */
export type VersionEntry = typeof VersionEntry.Type

/** A producer's contract as the file holds it. */
export const ProducedContract = Schema.Struct({
  id: Schema.String,
  topic: Schema.String,
  type: Schema.String,
  source: Schema.String,
  version: Schema.Int,
  compatibility: Schema.Literal(...modes),
  dataschema: Schema.String,
  description: Schema.optionalWith(Schema.String, { exact: true }),
  schema: JsonValue,
  history: Schema.Array(VersionEntry)
})
/** A producer's contract as the file holds it. */
export type ProducedContract = typeof ProducedContract.Type

/** A consumer's contract as the file holds it. */
export const ConsumedContract = Schema.Struct({
  topic: Schema.String,
  group: Schema.String,
  types: Schema.optionalWith(Schema.Array(Schema.String), { exact: true }),
  excessProperties: Schema.Literal("ignore", "reject"),
  description: Schema.optionalWith(Schema.String, { exact: true }),
  schema: JsonValue
})
/** A consumer's contract as the file holds it. */
export type ConsumedContract = typeof ConsumedContract.Type

/** The current format of contract files. */
export const fileFormat = 1

/** One service's contract file (`<service>.contract.json`). */
export const ContractFile = Schema.Struct({
  $comment: Schema.optionalWith(Schema.String, { exact: true }),
  bulwarkContracts: Schema.Literal(fileFormat),
  service: Schema.String,
  description: Schema.optionalWith(Schema.String, { exact: true }),
  produces: Schema.Array(ProducedContract),
  consumes: Schema.Array(ConsumedContract)
})
/** One service's contract file. */
export type ContractFile = typeof ContractFile.Type

/** The file name of a service's contracts. */
export const fileName = (service: string): string => `${service}.contract.json`

/** A schema could not be turned into JSON Schema (a declared type with no JSON Schema annotation, …). */
export class ContractExportError extends Data.TaggedError("ContractExportError")<{
  readonly service: string
  readonly contract: string
  readonly detail: string
}> {
  override get message(): string {
    return `${this.service}: the schema of ${this.contract} has no JSON Schema form: ${this.detail}`
  }
}

/** A contract file that is not JSON or not in the contract format. */
export class ContractFileError extends Data.TaggedError("ContractFileError")<{
  readonly file: string
  readonly detail: string
}> {
  override get message(): string {
    return `${this.file} is not a contract file: ${this.detail}`
  }
}

/** The JSON Schema 2020-12 document of a payload schema (the encoded side: what travels). */
export const jsonSchemaOf = (schema: Schema.Schema<any, any, never>): JsonSchema =>
  JSONSchema.make(schema, { target: "jsonSchema2020-12" }) as unknown as JsonSchema

const toJson = (service: string, contract: string, schema: Schema.Schema<any, any, never>) =>
  Effect.try({
    try: () => jsonSchemaOf(schema),
    catch: (error) => new ContractExportError({ service, contract, detail: error instanceof Error ? error.message.split("\n")[0]! : String(error) })
  })

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)

/**
 * The contract file of `service`. With the committed file (`previous`), earlier versions are carried over:
 * a producer whose version went up keeps the previous version's schema in its history.
 */
export const toFile = (service: Service, previous?: ContractFile): Effect.Effect<ContractFile, ContractExportError> =>
  Effect.gen(function*() {
    const produces: Array<ProducedContract> = []
    for (const p of service.produces) {
      const schema = yield* toJson(service.name, p.id, p.schema)
      const before = previous?.produces.find((e) => e.id === p.id)
      const history: Array<VersionEntry> = before === undefined ? [] : before.history.filter((h) => h.version < p.version).slice()
      if (before !== undefined && before.version < p.version && !history.some((h) => h.version === before.version)) {
        history.push({ version: before.version, schema: before.schema })
      }
      history.sort((a, b) => a.version - b.version)
      produces.push({
        id: p.id,
        topic: p.topic,
        type: p.type,
        source: p.source,
        version: p.version,
        compatibility: p.compatibility,
        dataschema: p.dataschema,
        ...(p.description === undefined ? {} : { description: p.description }),
        schema,
        history
      })
    }
    const consumes: Array<ConsumedContract> = []
    for (const c of service.consumes) {
      const schema = yield* toJson(service.name, `${c.topic} (group ${c.group})`, c.schema)
      consumes.push({
        topic: c.topic,
        group: c.group,
        ...(c.types === undefined ? {} : { types: c.types }),
        excessProperties: c.excessProperties,
        ...(c.description === undefined ? {} : { description: c.description }),
        schema
      })
    }
    return {
      $comment: "Generated by `bulwark contracts export` from the service's contract declarations; commit it, do not edit it.",
      bulwarkContracts: fileFormat,
      service: service.name,
      ...(service.description === undefined ? {} : { description: service.description }),
      produces,
      consumes
    }
  })

/** Whether two contract files say the same (what `check` uses to tell a stale committed file). */
export const sameFile = (a: ContractFile, b: ContractFile): boolean => sameJson(a, b)

/** The file's JSON text (stable key order, two-space indent, trailing newline). */
export const render = (file: ContractFile): string => `${JSON.stringify(file, null, 2)}\n`

const decodeFile = Schema.decodeUnknown(ContractFile, { errors: "all", onExcessProperty: "error" })

/** Reads a contract file's text. */
export const parse = (file: string, text: string): Effect.Effect<ContractFile, ContractFileError> =>
  Effect.gen(function*() {
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (error) => new ContractFileError({ file, detail: error instanceof Error ? error.message : String(error) })
    })
    return yield* Effect.mapError(decodeFile(json), (error) =>
      new ContractFileError({ file, detail: ParseResult.TreeFormatter.formatErrorSync(error) }))
  })
