import { checkEntries } from "./catalogue.js"

checkEntries(["short-retention", "half-open-stampede", "retry-without-jitter", "breaker-per-message"])
