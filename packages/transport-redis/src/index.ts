/** The Redis Streams transport driver. */
export * as RedisTransport from "./RedisTransport.js"
