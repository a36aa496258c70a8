import { checkEntries } from "./catalogue.js"

checkEntries(["check-then-set", "unbounded-retry", "dlq-loss", "short-retention"])
