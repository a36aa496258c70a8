/** The `bulwark` root command and runner. */
export * as Cli from "./Cli.js"
