/** Declaring contracts beside the code, and the contract file format. */
export * as Contract from "./Contract.js"
/** Schema-registry style compatibility of JSON Schema documents (BACKWARD, FORWARD, FULL, transitive). */
export * as Compatibility from "./Compatibility.js"
/** Producers against consumers, versions against history; text and JUnit reports. */
export * as Check from "./Check.js"
/** The AsyncAPI 3.0 document of contract files. */
export * as AsyncApi from "./AsyncApi.js"
/** Contract files on disk: export and check. */
export * as Project from "./Project.js"
/** Consumers that accept or route by contract version (`dataschema`). */
export * as Versioning from "./Versioning.js"
/** Contract checks inside a service's tests. */
export * as Testing from "./Testing.js"
/** Records which schemas the code really uses and finds those the contracts do not declare. */
export * as Capture from "./Capture.js"
