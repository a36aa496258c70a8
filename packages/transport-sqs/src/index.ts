/** The Amazon SQS transport driver. */
export * as SqsTransport from "./SqsTransport.js"
