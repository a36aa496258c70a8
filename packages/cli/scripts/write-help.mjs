#!/usr/bin/env node
// Renders `bulwark --help` once, after the build, into dist/help.ansi: the binary prints that file for a bare
// `--help` instead of loading Effect and every subcommand (about half of its start-up). Run by the build.
import { execFileSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

const dist = fileURLToPath(new URL("../dist/", import.meta.url))
const env = { ...process.env, BULWARK_HELP_CACHE: "off", FORCE_COLOR: "1" }
// The repository's source condition would point the compiled binary at the TypeScript sources.
delete env.NODE_OPTIONS
delete env.NO_COLOR
const help = execFileSync(process.execPath, [dist + "bin.js", "--help"], { env, encoding: "utf8" })
if (!help.includes("USAGE")) throw new Error(`unexpected help output:\n${help}`)
writeFileSync(dist + "help.ansi", help)
