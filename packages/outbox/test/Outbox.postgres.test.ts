import { engines } from "./helpers.js"
import { suite } from "./suite.js"

suite("postgres", engines.postgres())
