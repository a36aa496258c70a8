/**
 * Checks contract files the way CI should: every producer of a topic against every consumer of it (can the
 * consumer read what the producer writes?), and every producer's new version against its committed history
 * under the contract's compatibility mode. Other services' published files join the first check, which is
 * Pact's "can I deploy": a change here is judged against what the others really read and write.
 */
import * as Compatibility from "./Compatibility.js"
import type { ContractFile, ProducedContract } from "./Contract.js"

/** Why a check failed or warns. */
export type FindingKind =
  | "consumer-cannot-read"
  | "incompatible-version"
  | "version-regressed"
  | "changed-without-version-bump"
  | "stale-contract-file"
  | "no-producer"

/** One problem, with who is affected and how to fix it. */
export interface Finding {
  readonly kind: FindingKind
  /** `error` fails the check (exit 1); `warning` is reported only. */
  readonly severity: "error" | "warning"
  readonly topic: string
  /** The producing service and contract (`orders`, `order-paid/com.example.order.paid` v2). */
  readonly producer?: { readonly service: string; readonly id: string; readonly version: number }
  /** The consuming service and group. */
  readonly consumer?: { readonly service: string; readonly group: string }
  /** Which way the incompatibility goes, in words (`producer orders v2 → consumer shipping`, `backward: v2 reading v1 data`). */
  readonly direction: string
  /** The field in the payload (`amount`, `(root)`). */
  readonly field: string
  readonly message: string
  /** How to fix it. */
  readonly fix: string
}

/** One check that ran (a JUnit test case). */
export interface CheckCase {
  readonly name: string
  readonly classname: string
  readonly findings: ReadonlyArray<Finding>
}

/** What `check` found. */
export interface Report {
  /** No error (warnings allowed). */
  readonly ok: boolean
  readonly cases: ReadonlyArray<CheckCase>
  readonly findings: ReadonlyArray<Finding>
}

/** What to check. */
export interface CheckInput {
  /** The contracts as the code declares them now. */
  readonly current: ReadonlyArray<ContractFile>
  /** The committed files of the same services (their history and the versions they promised). */
  readonly committed?: ReadonlyArray<ContractFile>
  /** Other services' published files, for consumer-driven checks ("can I deploy"). */
  readonly against?: ReadonlyArray<ContractFile>
}

const describeProducer = (service: string, p: ProducedContract) => `producer ${service} (${p.type} v${p.version})`

/** How to fix a consumer that cannot read a producer: either side may move first. */
const consumerFix = (change: Compatibility.Change, producer: string, consumer: string): string => {
  const f = change.field
  switch (change.kind) {
    case "required-property-added-to-closed-model":
    case "property-made-required":
      return `${producer}: keep writing "${f}" (add any replacement beside it), or ${consumer}: make "${f}" optional first`
    case "type-changed":
    case "type-narrowed":
    case "union-narrowed":
    case "enum-narrowed":
    case "enum-added":
      return `${producer}: keep "${f}" as ${consumer} reads it and put the new shape in a new field, or ${consumer}: accept both first`
    default:
      return `${producer} must write what ${consumer} reads at "${f}": ${Compatibility.fixHint(change)}`
  }
}

/** Runs every check and answers the report. */
export const check = (input: CheckInput): Report => {
  const cases: Array<CheckCase> = []
  const currentNames = new Set(input.current.map((f) => f.service))
  // A service both declared here and in a published file: the declaration here is the one deploying.
  const others = (input.against ?? []).filter((f) => !currentNames.has(f.service))
  const all = [...input.current, ...others]

  // 1. Every producer of a topic against every consumer of it (at least one side declared here).
  for (const pf of all) {
    for (const p of pf.produces) {
      for (const cf of all) {
        if (!currentNames.has(pf.service) && !currentNames.has(cf.service)) continue
        for (const c of cf.consumes) {
          if (c.topic !== p.topic) continue
          if (c.types !== undefined && !c.types.includes(p.type)) continue
          const reader = c.excessProperties === "ignore" ? Compatibility.ignoringExcessProperties(c.schema) : c.schema
          const direction = `${describeProducer(pf.service, p)} → consumer ${cf.service} (group ${c.group})`
          const findings: Array<Finding> = []
          // Every version still in flight (committed history included) must be readable: messages of an
          // older version wait in outboxes, brokers and the dead-letter store.
          const versions: ReadonlyArray<{ version: number; schema: Compatibility.JsonSchema }> = [
            ...p.history.map((h) => ({ version: h.version, schema: h.schema })),
            { version: p.version, schema: p.schema }
          ]
          for (const v of versions) {
            for (const change of Compatibility.readable(v.schema, reader)) {
              if (change.compatible) continue
              findings.push({
                kind: "consumer-cannot-read",
                severity: "error",
                topic: p.topic,
                producer: { service: pf.service, id: p.id, version: v.version },
                consumer: { service: cf.service, group: c.group },
                direction: v.version === p.version ? direction : `${direction}, for messages still written with v${v.version}`,
                field: change.field,
                message: change.message,
                fix: consumerFix(change, pf.service, `${cf.service}/${c.group}`)
              })
            }
          }
          cases.push({ classname: `contracts.${p.topic}`, name: `${pf.service} ${p.type} → ${cf.service}/${c.group}`, findings })
        }
      }
    }
  }

  // 2. Consumers nobody produces for (a renamed topic or type): reported, not failed.
  for (const cf of input.current) {
    for (const c of cf.consumes) {
      const fed = all.some((pf) => pf.produces.some((p) => p.topic === c.topic && (c.types === undefined || c.types.includes(p.type))))
      if (fed) continue
      const finding: Finding = {
        kind: "no-producer",
        severity: "warning",
        topic: c.topic,
        consumer: { service: cf.service, group: c.group },
        direction: `consumer ${cf.service} (group ${c.group})`,
        field: "(root)",
        message: `no known producer writes ${c.types === undefined ? "" : `${c.types.join(", ")} to `}${c.topic}`,
        fix: "pass the producer's published contract file with --against, or check the topic and type names"
      }
      cases.push({ classname: `contracts.${c.topic}`, name: `${cf.service}/${c.group} has a producer`, findings: [finding] })
    }
  }

  // 3. Each producer's version against its committed history, under its compatibility mode.
  for (const cf of input.current) {
    const committed = input.committed?.find((f) => f.service === cf.service)
    for (const p of cf.produces) {
      const findings: Array<Finding> = []
      const before = committed?.produces.find((e) => e.id === p.id)
      if (before !== undefined) {
        const base = { topic: p.topic, producer: { service: cf.service, id: p.id, version: p.version } }
        if (p.version < before.version) {
          findings.push({
            ...base,
            kind: "version-regressed",
            severity: "error",
            direction: `v${before.version} → v${p.version}`,
            field: "(root)",
            message: `${p.id} went from version ${before.version} back to ${p.version}`,
            fix: `declare version ${before.version + 1} or later`
          })
        } else {
          const history: Array<Compatibility.Version> = [...before.history, { version: before.version, schema: before.schema }]
          const changedInPlace = p.version === before.version && JSON.stringify(p.schema) !== JSON.stringify(before.schema)
          if (changedInPlace) {
            findings.push({
              ...base,
              kind: "changed-without-version-bump",
              severity: "warning",
              direction: `v${p.version} (committed) → v${p.version} (code)`,
              field: "(root)",
              message: `the schema of ${p.id} changed but its version is still ${p.version}: envelopes cannot tell the two apart`,
              fix: `declare version ${p.version + 1}`
            })
          }
          if (p.version > before.version || changedInPlace) {
            for (const conflict of Compatibility.checkVersion(p.compatibility, history, { version: p.version, schema: p.schema })) {
              for (const change of conflict.changes) {
                findings.push({
                  ...base,
                  kind: "incompatible-version",
                  severity: "error",
                  direction: conflict.direction === "backward"
                    ? `${p.compatibility}: v${p.version} reading data written with v${conflict.against}`
                    : `${p.compatibility}: v${conflict.against} reading data written with v${p.version}`,
                  field: change.field,
                  message: change.message,
                  fix: Compatibility.fixHint(change)
                })
              }
            }
          }
        }
      }
      cases.push({ classname: `contracts.${p.topic}`, name: `${cf.service} ${p.id} v${p.version} (${p.compatibility})`, findings })
    }
  }

  const findings = cases.flatMap((c) => c.findings)
  return { ok: findings.every((f) => f.severity !== "error"), cases, findings }
}

/** The report for a terminal: one block per finding, then a summary line. */
export const renderText = (report: Report): string => {
  const lines: Array<string> = []
  for (const f of report.findings) {
    lines.push(`${f.severity === "error" ? "BREAKING" : "warning"} ${f.topic}: ${f.direction}`)
    lines.push(`  field ${f.field}: ${f.message}`)
    lines.push(`  fix: ${f.fix}`)
  }
  const errors = report.findings.filter((f) => f.severity === "error").length
  const warnings = report.findings.length - errors
  lines.push(
    report.ok
      ? `contracts compatible: ${report.cases.length} checks${warnings > 0 ? `, ${warnings} warning(s)` : ""}`
      : `contracts BROKEN: ${errors} breaking change(s) in ${report.cases.filter((c) => c.findings.some((f) => f.severity === "error")).length} of ${report.cases.length} checks`
  )
  return lines.join("\n")
}

const escapeXml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

/** A JUnit XML document: one test case per check, failed when it has an error. */
export const renderJUnit = (report: Report): string => {
  const failures = report.cases.filter((c) => c.findings.some((f) => f.severity === "error")).length
  const body = report.cases.map((c) => {
    const errors = c.findings.filter((f) => f.severity === "error")
    const open = `  <testcase classname="${escapeXml(c.classname)}" name="${escapeXml(c.name)}"`
    if (errors.length === 0) return `${open}/>`
    const message = errors.map((f) => `field ${f.field}: ${f.message}`).join("; ")
    const detail = errors.map((f) => `${f.direction}\nfield ${f.field}: ${f.message}\nfix: ${f.fix}`).join("\n\n")
    return `${open}>\n    <failure message="${escapeXml(message)}" type="${escapeXml(errors[0]!.kind)}">${escapeXml(detail)}</failure>\n  </testcase>`
  })
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<testsuite name="bulwark contracts" tests="${report.cases.length}" failures="${failures}">`,
    ...body,
    `</testsuite>`,
    ``
  ].join("\n")
}
