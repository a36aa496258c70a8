import { checkEntries } from "./catalogue.js"

checkEntries(["ack-before-processing", "unstable-idempotency-key", "no-dedupe", "dlq-ack-then-publish", "unbounded-retry"])
