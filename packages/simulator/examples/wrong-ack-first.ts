/** The ack-before-processing anti-pattern as a simulation module, for `bulwark simulate` (it must fail). */
import { catalogue } from "./catalogue.js"

/** Acks inbound deliveries before handling them; a crash in between loses the message. */
export const simulation = catalogue.find((entry) => entry.id === "ack-before-processing")!.wrong
