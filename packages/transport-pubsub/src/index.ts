/** The Google Cloud Pub/Sub transport driver. */
export * as PubSubTransport from "./PubSubTransport.js"
