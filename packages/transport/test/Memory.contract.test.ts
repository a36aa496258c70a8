import * as Contract from "../src/Contract.js"
import * as Memory from "../src/Transport/Memory.js"

Contract.suite("memory", Memory.layer({ visibilityTimeout: "300 millis" }), { propertyRuns: 25 })
Contract.suite("memory (ordered per key)", Memory.layer({ visibilityTimeout: "300 millis", orderedPerKey: true }), {
  propertyRuns: 10
})
