/**
 * An AsyncAPI 3.0 document from contract files, for documentation portals and code generators: channels
 * are topics, messages are CloudEvents types (structured mode: the payload schema is the whole CloudEvent,
 * its `data` the contract's schema), and operations are each service's sends and receives.
 */
import type { JsonSchema } from "./Compatibility.js"
import type { ContractFile } from "./Contract.js"

/** The document's `info`. */
export interface Info {
  readonly title: string
  readonly version: string
  readonly description?: string
}

const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]+/g, "_")

type Json = { [key: string]: unknown }

/**
 * Moves a schema's `$defs` into `components.schemas` (prefixed) and points its `$ref`s there: refs inside
 * an embedded schema resolve against the AsyncAPI document, not the schema.
 */
const hoist = (schema: JsonSchema, prefix: string, components: Json): JsonSchema => {
  if (typeof schema === "boolean") return schema
  const { $defs, $schema: _schema, ...rest } = schema as Json
  const rewrite = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(rewrite)
    if (typeof node !== "object" || node === null) return node
    const out: Json = {}
    for (const [key, value] of Object.entries(node)) {
      out[key] = key === "$ref" && typeof value === "string" && value.startsWith("#/$defs/")
        ? `#/components/schemas/${prefix}${value.slice("#/$defs/".length)}`
        : key === "enum" || key === "const" || key === "default" ? value : rewrite(value)
    }
    return out
  }
  if (typeof $defs === "object" && $defs !== null) {
    for (const [name, def] of Object.entries($defs)) components[`${prefix}${name}`] = rewrite(def)
  }
  return rewrite(rest) as JsonSchema
}

/** The CloudEvents 1.0 structured envelope around a payload schema. */
const cloudEvent = (type: string, source: string | undefined, dataschema: string | undefined, data: JsonSchema): Json => ({
  type: "object",
  required: ["specversion", "id", "source", "type", "data"],
  properties: {
    specversion: { const: "1.0" },
    id: { type: "string", minLength: 1 },
    source: source === undefined ? { type: "string", minLength: 1 } : { const: source },
    type: { const: type },
    subject: { type: "string", description: "the ordering key" },
    time: { type: "string", format: "date-time" },
    datacontenttype: { const: "application/json" },
    dataschema: dataschema === undefined ? { type: "string" } : { const: dataschema },
    data
  }
})

/** The AsyncAPI 3.0 document of `files`. */
export const make = (files: ReadonlyArray<ContractFile>, info: Info): Json => {
  const channels: Json = {}
  const operations: Json = {}
  const messages: Json = {}
  const schemas: Json = {}
  const channelOf = (topic: string) => {
    const key = safe(topic)
    if (channels[key] === undefined) channels[key] = { address: topic, messages: {} }
    return { key, channel: channels[key] as { messages: Json } }
  }
  for (const file of files) {
    for (const p of file.produces) {
      const name = safe(`${p.type}.v${p.version}`)
      const data = hoist(p.schema, `${name}.`, schemas)
      messages[name] = {
        name: p.type,
        title: `${p.type} v${p.version}`,
        contentType: "application/cloudevents+json",
        ...(p.description === undefined ? {} : { description: p.description }),
        payload: {
          schemaFormat: "application/schema+json;version=draft-2020-12",
          schema: cloudEvent(p.type, p.source, p.dataschema, data)
        },
        "x-bulwark-contract": { id: p.id, version: p.version, compatibility: p.compatibility, dataschema: p.dataschema }
      }
      const { key, channel } = channelOf(p.topic)
      channel.messages[name] = { $ref: `#/components/messages/${name}` }
      operations[safe(`${file.service}.send.${p.topic}.${p.type}`)] = {
        action: "send",
        channel: { $ref: `#/channels/${key}` },
        summary: `${file.service} publishes ${p.type} (contract v${p.version})`,
        messages: [{ $ref: `#/channels/${key}/messages/${name}` }]
      }
    }
  }
  for (const file of files) {
    for (const c of file.consumes) {
      const { key, channel } = channelOf(c.topic)
      const names = Object.keys(channel.messages).filter((name) => {
        const message = messages[name] as { name: string } | undefined
        return c.types === undefined || (message !== undefined && c.types.includes(message.name))
      })
      const schemaName = safe(`${file.service}.${c.group}.reads`)
      schemas[schemaName] = hoist(c.schema, `${schemaName}.`, schemas)
      operations[safe(`${file.service}.receive.${c.topic}.${c.group}`)] = {
        action: "receive",
        channel: { $ref: `#/channels/${key}` },
        summary: `${file.service} (group ${c.group}) consumes ${c.topic}`,
        messages: names.map((name) => ({ $ref: `#/channels/${key}/messages/${name}` })),
        "x-bulwark-reads": { $ref: `#/components/schemas/${schemaName}` }
      }
    }
  }
  return {
    asyncapi: "3.0.0",
    info: { title: info.title, version: info.version, ...(info.description === undefined ? {} : { description: info.description }) },
    defaultContentType: "application/cloudevents+json",
    channels,
    operations,
    components: { messages, schemas }
  }
}
