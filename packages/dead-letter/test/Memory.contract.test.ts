import * as Memory from "../src/DeadLetterStore/Memory.js"
import { suite } from "./contract.js"

suite("memory", Memory.layer)
