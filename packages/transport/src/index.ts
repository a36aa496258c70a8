/** The `Publisher` and `Subscriber` ports. */
export * as Transport from "./Transport.js"
/** The in-memory transport driver. */
export * as Memory from "./Transport/Memory.js"
