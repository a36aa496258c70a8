import { checkEntries } from "./catalogue.js"

checkEntries(["everything-permanent", "no-backoff", "no-replay", "reserialising-verifier"])
