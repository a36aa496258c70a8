import { checkEntries } from "./catalogue.js"

checkEntries(["commit-then-publish", "ack-before-processing", "non-idempotent-consumer", "dedupe-after-effect"])
