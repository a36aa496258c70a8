import { checkEntries } from "./catalogue.js"

checkEntries(["half-open-stampede", "retry-without-jitter", "relay-out-of-order", "reserialising-verifier"])
