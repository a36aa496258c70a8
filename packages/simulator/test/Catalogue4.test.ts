import { checkEntries } from "./catalogue.js"

checkEntries(["commit-then-publish", "check-then-post", "sender-in-consumer"])
