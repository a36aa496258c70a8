/**
 * Contract files on disk: export the declarations of a project's services into a directory (one
 * `<service>.contract.json` each, history carried over), and check the declarations against the committed
 * files and against other services' published ones. The CLI and the test helper both run these.
 */
import { Data, Effect } from "effect"
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { basename, dirname, join } from "node:path"
import * as AsyncApi from "./AsyncApi.js"
import * as Check from "./Check.js"
import * as Contract from "./Contract.js"

/** Reading or writing a contract file failed. */
export class ContractIoError extends Data.TaggedError("ContractIoError")<{
  readonly path: string
  readonly detail: string
}> {
  override get message(): string {
    return `${this.path}: ${this.detail}`
  }
}

const detailOf = (error: unknown) => error instanceof Error ? error.message : String(error)

/** Reads one contract file. */
export const readFile = (path: string): Effect.Effect<Contract.ContractFile, Contract.ContractFileError | ContractIoError> =>
  Effect.flatMap(
    Effect.try({ try: () => readFileSync(path, "utf8"), catch: (error) => new ContractIoError({ path, detail: detailOf(error) }) }),
    (text) => Contract.parse(path, text)
  )

/** Reads every `*.contract.json` in `dir` (none when the directory does not exist). */
export const readDir = (dir: string): Effect.Effect<ReadonlyArray<Contract.ContractFile>, Contract.ContractFileError | ContractIoError> =>
  Effect.suspend(() => {
    if (!existsSync(dir)) return Effect.succeed([])
    return Effect.flatMap(
      Effect.try({ try: () => readdirSync(dir).filter((f) => f.endsWith(".contract.json")).sort(), catch: (error) => new ContractIoError({ path: dir, detail: detailOf(error) }) }),
      (names) => Effect.forEach(names, (name) => readFile(join(dir, name)))
    )
  })

/** What {@link exportTo} wrote. */
export interface ExportResult {
  /** Files written because they changed (or were new). */
  readonly written: ReadonlyArray<string>
  /** Files already up to date. */
  readonly unchanged: ReadonlyArray<string>
  /** The exported files. */
  readonly files: ReadonlyArray<Contract.ContractFile>
}

/** Options of {@link exportTo}. */
export interface ExportOptions {
  /** Also write an AsyncAPI 3.0 document of every exported service here. */
  readonly asyncapi?: { readonly path: string; readonly info: AsyncApi.Info }
}

const writeText = (path: string, text: string) =>
  Effect.try({
    try: () => {
      mkdirSync(dirname(path), { recursive: true })
      writeFileSync(path, text)
    },
    catch: (error) => new ContractIoError({ path, detail: detailOf(error) })
  })

/** The current contract files of `services`, with the history of the committed files in `dir`. */
export const currentFiles = (services: ReadonlyArray<Contract.Service>, dir: string) =>
  Effect.gen(function*() {
    yield* Contract.validate(services)
    const committed = yield* readDir(dir)
    const files = yield* Effect.forEach(services, (service) => Contract.toFile(service, committed.find((f) => f.service === service.name)))
    return { files, committed }
  })

/** Writes `<service>.contract.json` for every service into `dir` (and the AsyncAPI document when asked). */
export const exportTo = (services: ReadonlyArray<Contract.Service>, dir: string, options: ExportOptions = {}) =>
  Effect.gen(function*() {
    const { committed, files } = yield* currentFiles(services, dir)
    const written: Array<string> = []
    const unchanged: Array<string> = []
    for (const file of files) {
      const path = join(dir, Contract.fileName(file.service))
      const before = committed.find((f) => f.service === file.service)
      if (before !== undefined && Contract.sameFile(before, file)) {
        unchanged.push(path)
        continue
      }
      yield* writeText(path, Contract.render(file))
      written.push(path)
    }
    if (options.asyncapi !== undefined) {
      yield* writeText(options.asyncapi.path, `${JSON.stringify(AsyncApi.make(files, options.asyncapi.info), null, 2)}\n`)
      written.push(options.asyncapi.path)
    }
    return { written, unchanged, files } satisfies ExportResult
  })

/** Options of {@link checkAgainst}. */
export interface CheckOptions {
  /** Other services' published contract files (paths), for "can I deploy". */
  readonly against?: ReadonlyArray<string>
  /** A committed file that is missing or out of date fails the check instead of warning. */
  readonly frozen?: boolean
}

/**
 * Checks the declarations of `services` against the committed files in `dir` (history, versions, readers of
 * their topics) and against the published files in `options.against`.
 */
export const checkAgainst = (services: ReadonlyArray<Contract.Service>, dir: string, options: CheckOptions = {}) =>
  Effect.gen(function*() {
    const { committed, files } = yield* currentFiles(services, dir)
    const against = yield* Effect.forEach(options.against ?? [], readFile)
    // Committed files of services not declared here are published contracts of others in the same repo.
    const names = new Set(files.map((f) => f.service))
    const report = Check.check({ current: files, committed, against: [...committed.filter((f) => !names.has(f.service)), ...against] })
    const stale: Array<Check.CheckCase> = files.map((file) => {
      const before = committed.find((f) => f.service === file.service)
      const upToDate = before !== undefined && Contract.sameFile(before, file)
      const finding: Check.Finding = {
        kind: "stale-contract-file",
        severity: options.frozen === true ? "error" : "warning",
        topic: "(contract file)",
        direction: `service ${file.service}`,
        field: "(root)",
        message: before === undefined
          ? `${join(basename(dir), Contract.fileName(file.service))} is not committed yet`
          : `${join(basename(dir), Contract.fileName(file.service))} differs from the declarations`,
        fix: "run `bulwark contracts export` and commit the file"
      }
      return { classname: "contracts.files", name: `${file.service} contract file is up to date`, findings: upToDate ? [] : [finding] }
    })
    const cases = [...report.cases, ...stale]
    const findings = cases.flatMap((c) => c.findings)
    return { ok: findings.every((f) => f.severity !== "error"), cases, findings } satisfies Check.Report
  })
